"""Writing the `ctd.*` metadata into ONNX models (the keys and their parsing live in
`ctd_runtime.model_meta`, which the station reads without the onnx package)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import ctd_runtime
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
