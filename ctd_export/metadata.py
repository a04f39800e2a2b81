"""The `ctd.*` metadata of in-memory ONNX models: written at export, read back and checked where
a conversion starts, rewritten for a converted copy (the keys and their parsing live in
`ctd_runtime.model_meta`, which the station reads without the onnx package)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import ctd_runtime
from ctd_runtime.crop_rule import CropSpec
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import PREFIX, ModelMetadata

FUSED_OUTPUTS: tuple[str, ...] = ("landmarks", "scores")
RAW_OUTPUTS: tuple[str, ...] = ("heatmaps",)


def metadata_for_run(
    run: Any,
    decode: str,
    graph: str = "fused",
    with_heatmaps: bool = False,
    precision: str = "fp32",
) -> ModelMetadata:
    """The metadata of a model exported from a loaded run (`ctd_train.checkpoint.LoadedRun`)."""
    if graph == "raw":
        outputs = RAW_OUTPUTS
    else:
        outputs = FUSED_OUTPUTS + (("heatmaps",) if with_heatmaps else ())
    return ModelMetadata(
        ctd_version=ctd_runtime.__version__,
        schema=run.schema,
        input_size=int(run.input_size),
        normalization=run.normalization,
        decode=decode,
        precision=precision,
        graph=graph,
        stride=int(run.codec.stride),
        sigma=float(run.codec.sigma),
        run_id=str(run.run_id),
        outputs=outputs,
        crop=CropSpec.from_config(run.config),
    )


def set_metadata(model: Any, meta: ModelMetadata) -> Any:
    """Replace the model's `ctd.*` metadata_props with `meta` (other keys are kept); returns the model."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + list(meta.to_map().items()):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model


def get_metadata(model: Any, where: str | Path | None = None) -> ModelMetadata:
    """The `ctd.*` metadata of an in-memory ModelProto (CtdError as `read_model_metadata`)."""
    return ModelMetadata.from_map({p.key: p.value for p in model.metadata_props}, where=where)


def with_precision(meta: ModelMetadata, precision: str) -> ModelMetadata:
    """The same metadata for a converted (fp16 / int8) copy of the model."""
    return replace(meta, precision=precision)


def read_metadata_props(model: Any) -> dict[str, str]:
    """Every metadata_props entry of a ModelProto (ctd.* and any other key)."""
    return {p.key: p.value for p in model.metadata_props}


def set_metadata_props(model: Any, updates: dict[str, Any]) -> None:
    """Set (or replace) metadata_props entries, keeping the others in order."""
    props = read_metadata_props(model)
    props.update({k: str(v) for k, v in updates.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def load_checked_model(path: str | Path, precision: str = "fp32") -> tuple[Any, ModelMetadata]:
    """(the ONNX model at `path`, its checked ctd metadata): the common start of every
    reduced-precision conversion; CtdError naming the file when it is missing, has no ctd metadata
    or is not of `precision`."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CtdError("ONNX file not found", path=path)
    model = onnx.load(str(path))
    meta = get_metadata(model, where=path)
    if meta.precision != precision:
        raise CtdError(f"expected an {precision.upper()} model, this one has ctd.precision={meta.precision}",
                       path=path)
    return model, meta


def write_converted_metadata(model: Any, meta: ModelMetadata, precision: str, details_key: str,
                             details: dict[str, Any]) -> None:
    """`meta` with the new precision, plus the conversion details as JSON under `details_key`."""
    set_metadata(model, with_precision(meta, precision))
    set_metadata_props(model, {details_key: json.dumps(details, sort_keys=True)})
