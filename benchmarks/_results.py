"""The ending every accuracy benchmark shares: print its Markdown table, then write it and the JSON
document beside each other (OUT.md, OUT.json), atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def publish(out: Path, doc: dict[str, Any], table: str) -> None:
    from ctd_runtime.atomic import write_json_atomic, write_text_atomic

    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), doc)
    write_text_atomic(out.with_suffix(".md"), table)


def publish_by_seed(out: Path, meta: dict[str, Any], seeds: dict[int, Any], table: str) -> None:
    """`publish` for a per-seed benchmark: the meta fields and {"seeds": {"0": ..., ...}}."""
    publish(out, {**meta, "seeds": {str(k): v for k, v in seeds.items()}}, table)
