"""`ctd export FACE_RUN --refine EYE_RUN`: the two-stage graph (ctd_export.cascade_graph) as one
model.onnx, behind its own parity gate.

Reference: the PyTorch pipeline of each stage (OpenCV warp, predictor, numpy decode), the second
stage on the fissure crop `crop_box("pfl")` of the first stage's corners, exactly as
`ctd_train.cascade` evaluates it. The gate judges the mean landmark distance (`Gate("mean")`)
and reports the largest: a first-stage decode that float noise decides (a near-tie between two
heatmap pixels, see ctd_export.parity) moves the fissure crop, and the second stage then lands a
fraction of a pixel elsewhere, which a max-gate would count as a wrong graph. The graph is FP32;
the FP16 / INT8 variants and the engine of the two-stage graph are not made yet (they are for
the one-stage graph).

The file carries the first stage's `ctd.*` metadata (schema, input size, normalisation, decode)
plus `ctd.refine`: the eye run's id, schema and crop scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ctd_export.onnx_export import (
    EXPORT_CONFIG_FILE,
    MODEL_FILE,
    ExportOptions,
    _check_out_dir,
    _check_run,
    build_fused_model,
    export_onnx_model,
)
from ctd_runtime.atomic import atomic_path, write_json_atomic
from ctd_runtime.errors import CtdError


def fissure_crops(landmarks: np.ndarray, pfl_pair: tuple[int, int], crop_scale: float, input_size: int) -> np.ndarray:
    """The second stage's crop affines [N, 2, 3] from first-stage landmarks [N, K, 2]."""
    from ctd_runtime.crop_rule import pair_crop

    pts = np.asarray(landmarks, dtype=np.float64)
    return np.stack([pair_crop(p[pfl_pair[0]], p[pfl_pair[1]], crop_scale).affine(input_size) for p in pts])


def cascade_reference(face: Any, eye: Any, images: list[np.ndarray], crops: np.ndarray, decode: str,
                      eye_decode: str, crop_scale: float) -> tuple[Any, np.ndarray, np.ndarray]:
    """(the first stage's TorchReference, merged landmarks [N, K, 2], merged scores [N, K])."""
    from ctd_export.parity import torch_reference
    from ctd_train.cascade import shared_landmarks

    first = torch_reference(face, images, crops, decode)
    eye_crops = fissure_crops(first.landmarks, face.schema.pfl_pair, crop_scale, eye.input_size)
    second = torch_reference(eye, first.images, eye_crops, eye_decode)
    landmarks, scores = first.landmarks.copy(), first.scores.copy()
    for i, j in shared_landmarks(face.schema, eye.schema):
        landmarks[:, i], scores[:, i] = second.landmarks[:, j], second.scores[:, j]
    return first, landmarks, scores


def _eye_crop_scale(eye: Any) -> float:
    config = eye.config or {}
    if config.get("crop") != "pfl":
        raise CtdError(f"the refinement run was trained on {config.get('crop', 'face')!r} crops, not on fissure "
                       "crops (ctd train --crop pfl)", path=eye.run_dir)
    return float(config.get("crop_scale", 2.5))


def cascade_graph(face: Any, eye: Any, options: ExportOptions) -> tuple[Any, str, str, float]:
    """(onnx.ModelProto with metadata, face decode, eye decode, crop scale)."""
    from ctd_export.cascade_graph import CascadeFusedModel
    from ctd_export.metadata import metadata_for_run, set_metadata, set_metadata_props
    from ctd_export.op_support import check_graph_ops
    from ctd_train.cascade import shared_landmarks

    crop_scale = _eye_crop_scale(eye)
    decode, eye_decode = options.decode or face.decode, options.decode or eye.decode
    module = CascadeFusedModel(build_fused_model(face, decode), build_fused_model(eye, eye_decode),
                               shared_landmarks(face.schema, eye.schema), face.schema.pfl_pair, crop_scale).eval()
    model = export_onnx_model(module, "fused", face.schema.num_landmarks, face.input_size, face.codec.heatmap_size,
                              options.opset, options.exporter)
    set_metadata(model, metadata_for_run(face, decode, "fused"))
    set_metadata_props(model, {"ctd.refine": json.dumps({"run_id": str(eye.run_id), "schema": eye.schema.name,
                                                          "crop_scale": crop_scale, "decode": eye_decode})})
    problems = check_graph_ops(model)
    if problems:
        raise CtdError("the two-stage graph is not TensorRT-clean: " + "; ".join(problems[:5]))
    return model, decode, eye_decode, crop_scale


def export_cascade(face_dir: str | Path, eye_dir: str | Path, out_dir: str | Path,
                   options: ExportOptions | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export the two-stage graph to OUT/model.onnx (gated) and export_config.json; returns the
    config's dict."""
    import onnx

    from ctd_export.parity import backend_outputs
    from ctd_export.parity_report import compare_landmarks
    from ctd_export.validation_images import validation_set
    from ctd_runtime.backends import create_backend
    from ctd_train.checkpoint import load_run

    options = options or ExportOptions()
    options.check()
    if options.raw or options.heatmaps or options.engine:
        raise CtdError("the two-stage graph is exported fused, without heatmaps and without an engine")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, options.force)
    say = log or (lambda _msg: None)
    face, eye = load_run(face_dir, which=options.which), load_run(eye_dir, which=options.which)
    for run in (face, eye):
        _check_run(run, options)
    say("exporting the two-stage graph (face model, fissure crop, eye model)")
    model, decode, eye_decode, crop_scale = cascade_graph(face, eye, options)
    images, crops, source = validation_set(face, options.images, options.max_images)
    first, landmarks, scores = cascade_reference(face, eye, images, crops, decode, eye_decode, crop_scale)
    say(f"parity gate on {len(images)} crops ({source})")
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        onnx.save(model, str(tmp))
        backend = create_backend(tmp, "onnxruntime", **({"threads": options.threads} if options.threads else {}))
        with backend:
            outputs = backend_outputs(backend, first)
        report = compare_landmarks(landmarks, outputs["landmarks"], options.tolerance_px, face.schema.landmark_names,
                                   scores, outputs["scores"], statistic="mean")
        if not report.passed:
            raise CtdError(f"parity gate failed: the two-stage graph and PyTorch differ by mean {report.mean_px:.4g} px "
                           f"(max {report.max_px:.4g} px, tolerance {options.tolerance_px:g} px); nothing was written",
                           path=out_dir)
    config = {"face_run": str(Path(face.run_dir)), "eye_run": str(Path(eye.run_dir)), "model": MODEL_FILE,
              "graph": "fused-cascade", "decode": decode, "eye_decode": eye_decode, "crop_scale": crop_scale,
              "precision": "fp32", "parity": {**report.to_dict(), "source": source},
              "options": options.to_dict(), "artifacts": {"onnx": MODEL_FILE}}
    write_json_atomic(out_dir / EXPORT_CONFIG_FILE, config)
    say(f"model.onnx written: parity mean {report.mean_px:.3g} px, max {report.max_px:.3g} px")
    return config
