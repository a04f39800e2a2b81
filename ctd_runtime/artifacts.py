"""The file names of one export: model.onnx and its siblings, named in this one place.

    model.onnx        FP32 fused graph (the source of every variant)
    model.fp16.onnx   FP16 network between FP32 warp and decode
    model.int8.onnx   INT8 Q/DQ network
    model.plan        TensorRT engine from the FP32/FP16 graph (+ model.plan.json, its manifest)
    model.int8.plan   TensorRT engine from the INT8 graph
"""

from __future__ import annotations

from pathlib import Path

from ctd_runtime.errors import CtdError

ONNX_PRECISIONS = ("fp32", "fp16", "int8")
_ONNX_SUFFIXES = {"fp32": ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx"}
MANIFEST_SUFFIX = ".json"


def export_stem(path: str | Path) -> str:
    """`model` for model.onnx, model.fp16.onnx, model.int8.onnx, model.plan and model.int8.plan."""
    name = Path(path).name
    for suffix in (".fp16.onnx", ".int8.onnx", ".int8.plan", ".onnx", ".plan", ".engine"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def precision_of(path: str | Path) -> str:
    """The precision a sibling's name says: fp16 / int8 by its infix, fp32 otherwise."""
    name = Path(path).name
    for precision in ("fp16", "int8"):
        if f".{precision}." in name:
            return precision
    return "fp32"


def onnx_variant(path: str | Path, precision: str) -> Path:
    """model.onnx / model.fp16.onnx / model.int8.onnx of the same export as `path`, for `precision`."""
    if precision not in _ONNX_SUFFIXES:
        raise CtdError(f"unknown precision {precision!r}; choose from {', '.join(ONNX_PRECISIONS)}")
    p = Path(path)
    return p.with_name(export_stem(p) + _ONNX_SUFFIXES[precision])


def plan_path(onnx_path: str | Path) -> Path:
    """The default engine beside an ONNX file: model.plan, or model.int8.plan for the INT8 graph."""
    p = Path(onnx_path)
    suffix = ".int8.plan" if precision_of(p) == "int8" else ".plan"
    return p.with_name(export_stem(p) + suffix)


def manifest_path(plan: str | Path) -> Path:
    """model.plan -> model.plan.json (the manifest the runtime checks before loading the engine)."""
    p = Path(plan)
    return p.with_name(p.name + MANIFEST_SUFFIX)
