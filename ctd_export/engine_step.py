"""The export's TensorRT step: build model.plan from model.fp16.onnx with the station's own builder
(`ctd_runtime.engine.build`, imported lazily: TensorRT is optional) and gate it like model.onnx,
through the same comparator on the same parity images (`ctd_export.parity.compare_backends`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctd_runtime.artifacts import manifest_path, plan_path
from ctd_runtime.errors import CtdError


def require_tensorrt() -> None:
    """CtdError with the install hint where TensorRT is missing (checked before anything is
    exported, so an engine export fails without writing)."""
    from ctd_runtime.engine.environment import import_tensorrt

    import_tensorrt()


def _timing_cache(out_dir: Path, name: str | None) -> Path | None:
    if name is None:
        return None
    path = Path(name)
    return path if path.is_absolute() else out_dir / path


def engine_post_step(context: Any) -> None:
    """An `ExportOptions.post_steps` entry (after the FP16 step): build the engine beside
    model.fp16.onnx, record it with its manifest and timing cache in `result.artifacts`, its
    parity in `result.reports["engine"]`; an engine that fails the gate is deleted again."""
    from ctd_export.parity import compare_backends
    from ctd_runtime.engine.build import build_engine

    result, options = context.result, context.options
    source = result.artifacts.get("fp16")
    if source is None:
        raise CtdError("the engine is built from model.fp16.onnx, which this export did not write", path=result.out_dir)
    plan = plan_path(source)
    cache = _timing_cache(result.out_dir, options.timing_cache)
    manifest = build_engine(source, plan, profile=options.engine_profile, workspace_mb=options.workspace_mb,
                            timing_cache_path=cache, log=context.log)
    written = [plan, manifest_path(plan)]
    result.artifacts.update(engine=plan, engine_manifest=written[1])
    if cache is not None and cache.is_file():
        result.artifacts["timing_cache"] = cache
    report = compare_backends(context.run, context.reference, [plan], options.tolerance_px,
                              options.heatmap_tolerance)[0]
    result.reports["engine"] = {"precision": manifest.precision, "build_mode": manifest.build_mode,
                                "parity": report.to_dict()}
    if not report.passed:
        for path in written:
            path.unlink(missing_ok=True)
        del result.artifacts["engine"], result.artifacts["engine_manifest"]
        raise CtdError(f"engine parity gate failed, {plan.name} deleted again: {report.summary()}", path=result.out_dir)
