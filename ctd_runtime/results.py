"""The result of one capture (`CaptureResult`) and the files `ctd infer` writes: results.jsonl
(one JSON object per capture) and results.csv (the same, flat, one row per capture). The schema
is documented in docs/infer.md; `RESULT_VERSION` changes when it does.

Both files are written through ctd_runtime.atomic: a killed run leaves the previous file or none,
never half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ctd_runtime.atomic import write_text_atomic

RESULT_VERSION = 1
STATUSES: tuple[str, ...] = ("ok", "no_face", "error")
TIMING_KEYS: tuple[str, ...] = ("read_s", "detect_s", "pfl3d_s", "overlay_s", "total_s")
CSV_HEAD: tuple[str, ...] = (
    "input", "name", "kind", "status", "error", "reason", "width", "height",
    "box_x", "box_y", "box_w", "box_h", "box_source", "passes",
    "spacing_mm", "spacing_source", "pfl_px", "pfl_mm", "pfl_3d_mm", "flags", *TIMING_KEYS,
)


@dataclass
class CaptureResult:
    """One capture's measurement, or why there is none (status "no_face" or "error")."""

    input: str
    name: str
    kind: str
    status: str
    error: str | None = None
    reason: str | None = None
    texture: str | None = None
    width: int | None = None
    height: int | None = None
    box: list[float] | None = None
    box_source: str | None = None
    passes: int = 0
    landmarks: list[dict[str, Any]] = field(default_factory=list)
    spacing_mm: float | None = None
    spacing_source: str | None = None
    pfl_px: float | None = None
    pfl_mm: float | None = None
    pfl_3d_mm: float | None = None
    flags: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model: dict[str, str] = field(default_factory=dict)
    signature: list[int] | None = None  # watch mode: (size, mtime_ns) of the files read
    version: int = RESULT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaptureResult":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def csv_row(self, landmark_names: Sequence[str]) -> list[Any]:
        box = self.box if self.box else [None] * 4
        row: list[Any] = [
            self.input, self.name, self.kind, self.status, self.error, self.reason, self.width, self.height,
            *box, self.box_source, self.passes, self.spacing_mm, self.spacing_source,
            self.pfl_px, self.pfl_mm, self.pfl_3d_mm, ";".join(dict.fromkeys(f["code"] for f in self.flags)),
            *(self.timings.get(k) for k in TIMING_KEYS),
        ]
        by_name = {lm["name"]: lm for lm in self.landmarks}
        for name in landmark_names:
            lm = by_name.get(name, {})
            row += [lm.get("x"), lm.get("y"), lm.get("score")]
        return ["" if v is None else v for v in row]


def csv_header(landmark_names: Sequence[str]) -> list[str]:
    return [*CSV_HEAD, *(f"{n}_{c}" for n in landmark_names for c in ("x", "y", "score"))]


def write_results(out_dir: str | Path, results: Sequence[CaptureResult], landmark_names: Sequence[str]) -> tuple[Path, Path]:
    """results.jsonl and results.csv in `out_dir` (each atomically); their paths."""
    out = Path(out_dir)
    jsonl = out / "results.jsonl"
    write_text_atomic(jsonl, "".join(r.to_json() + "\n" for r in results))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(landmark_names))
    for r in results:
        writer.writerow(r.csv_row(landmark_names))
    path_csv = out / "results.csv"
    write_text_atomic(path_csv, buf.getvalue())
    return jsonl, path_csv


def _finite(value: Any) -> Any:
    """NaN and inf as None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
