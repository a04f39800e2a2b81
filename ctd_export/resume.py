"""Rerunning `ctd export` into a folder that already holds (part of) an export.

An export writes model.onnx, then each variant, and rewrites export_config.json after each of
them, listing what is on disk with its SHA-256 and which steps are still pending. A rerun
without `--force`:

- refuses a model.onnx that is not this export's: another run, decode, graph or outputs (seen in
  its metadata before any work), or different bytes from the graph this export builds (another
  checkpoint epoch, opset, exporter...: seen once the graph is built, before anything is written);
- keeps a model.onnx that is byte for byte the one it would write, and runs only the steps whose
  output export_config.json does not vouch for (listed, same SHA-256, same options of that
  step): the fp16/int8 files a killed export never wrote are made, the others are not redone.

`--force` starts afresh; the siblings of a replaced model.onnx (variants, engine) are removed
with it, since they were made from the old one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ctd_runtime.artifacts import manifest_path, onnx_variant, plan_path
from ctd_runtime.errors import CtdError

# what each built-in step writes (keys of ExportResult.artifacts) and the options it depends on
STEP_ARTIFACTS: dict[str, tuple[str, ...]] = {
    "fp16": ("fp16",), "int8": ("int8",), "engine": ("engine", "engine_manifest"),
}
STEP_OPTIONS: dict[str, tuple[str, ...]] = {
    "fp16": (),
    "int8": ("calibration", "calibration_images"),
    "engine": ("engine_profile", "workspace_mb", "timing_cache", "tolerance_px", "heatmap_tolerance"),
}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_previous_config(path: Path) -> dict[str, Any] | None:
    """The export_config.json of an earlier export into the folder; None when absent or unreadable
    (it is written atomically: unreadable means it is not ours)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def check_existing_model(model_path: Path, run_id: str, decode: str, graph: str, outputs: tuple[str, ...]) -> None:
    """CtdError (before any work) when the folder's model.onnx is not a ctd export of this run with
    this decode, graph and outputs; the bytes are compared later (`same_bytes`)."""
    import onnx

    from ctd_export.metadata import get_metadata

    hint = "; use --force to overwrite it, or choose another --out"
    try:
        meta = get_metadata(onnx.load(str(model_path), load_external_data=False), where=model_path)
    except Exception:  # a damaged or foreign file: its own error says why
        raise CtdError(f"holds a model.onnx that is not a readable ctd export{hint}", path=model_path) from None
    theirs = {"run": meta.run_id, "decode": meta.decode, "graph": meta.graph, "outputs": ",".join(meta.outputs),
              "precision": meta.precision}
    ours = {"run": run_id, "decode": decode, "graph": graph, "outputs": ",".join(outputs), "precision": "fp32"}
    diffs = [f"{k} {theirs[k]} (this export: {ours[k]})" for k in ours if theirs[k] != ours[k]]
    if diffs:
        raise CtdError(f"holds a model.onnx of another export: {'; '.join(diffs)}{hint}", path=model_path)


def same_bytes(model_path: Path, serialized: bytes) -> None:
    """CtdError unless the existing model.onnx is exactly the graph this export built."""
    if model_path.read_bytes() != serialized:
        raise CtdError("holds a model.onnx of the same run that differs from the graph this export builds "
                       "(another checkpoint, opset or exporter); use --force to overwrite it", path=model_path)


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def step_done(previous: dict[str, Any] | None, name: str, options: dict[str, Any], out_dir: Path) -> bool:
    """Whether an earlier export into `out_dir` (its config `previous`) completed step `name` with
    the same options, and its files are still the ones it listed."""
    if previous is None or name not in STEP_ARTIFACTS or (previous.get("steps") or {}).get(name) != "done":
        return False
    before = previous.get("options") or {}
    if any(_normalised(before.get(k)) != _normalised(options.get(k)) for k in STEP_OPTIONS[name]):
        return False
    listed, hashes = previous.get("artifacts") or {}, previous.get("files") or {}
    for key in STEP_ARTIFACTS[name]:
        file = listed.get(key)
        if not file or not (out_dir / file).is_file() or hashes.get(file) != file_sha256(out_dir / file):
            return False
    return name in (previous.get("reports") or {})


def derived_files(model_path: Path) -> list[Path]:
    """The files an export makes from model.onnx: its FP16/INT8 variants and their engines."""
    files = [onnx_variant(model_path, p) for p in ("fp16", "int8")]
    plans = [plan_path(files[0]), plan_path(files[1])]
    return files + plans + [manifest_path(p) for p in plans]
