"""ctd.* metadata: written with onnx (`ctd_export.metadata`), read back through ONNX Runtime
(`ctd_runtime.model_meta`), and files without it (or with a bad or missing key) rejected."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ctd_runtime
from ctd_export.metadata import get_metadata, metadata_for_run, set_metadata, with_precision
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import KEYS, ModelMetadata, read_model_metadata
from ctd_runtime.schema import get_schema
from tests.export.test_fused import RGB_NORM, fake_run


def _identity_model() -> onnx.ModelProto:
    """A one-node ONNX model made with onnx.helper (no ctd metadata)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _meta() -> ModelMetadata:
    return ModelMetadata(
        ctd_version=ctd_runtime.__version__, schema=get_schema("imm14"), input_size=256,
        normalization=RGB_NORM, decode="dark", precision="fp32", graph="fused", stride=4, sigma=1.5,
        run_id="run-42", outputs=("landmarks", "scores"),
    )


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_round_trip_through_onnxruntime(tmp_path):
    meta = _meta()
    model = set_metadata(_identity_model(), meta)
    model.metadata_props.add(key="author", value="kept")
    path = _save(model, tmp_path / "m.onnx")
    back = read_model_metadata(path)
    assert back == meta
    assert back.codec.heatmap_size == 64 and back.num_landmarks == 14
    assert set(meta.to_map()) == set(KEYS)
    # replacing keeps other keys and does not duplicate ctd ones
    set_metadata(model, with_precision(meta, "fp16"))
    keys = [p.key for p in model.metadata_props]
    assert keys.count("ctd.precision") == 1 and "author" in keys
    assert get_metadata(model).precision == "fp16"


def test_metadata_for_run():
    run = fake_run("quarter")
    meta = metadata_for_run(run, "quarter", with_heatmaps=True)
    assert meta.outputs == ("landmarks", "scores", "heatmaps") and meta.graph == "fused"
    assert meta.run_id == run.run_id and meta.input_size == 64 and meta.normalization == RGB_NORM
    assert metadata_for_run(run, "argmax", graph="raw").outputs == ("heatmaps",)


def test_onnx_without_ctd_metadata_is_rejected(tmp_path):
    path = _save(_identity_model(), tmp_path / "foreign.onnx")
    with pytest.raises(CtdError) as e:
        read_model_metadata(path)
    assert str(path) in str(e.value) and "ctd.version" in str(e.value)


@pytest.mark.parametrize("missing", ["ctd.decode", "ctd.schema", "ctd.outputs"])
def test_missing_key_is_named(tmp_path, missing):
    model = _identity_model()
    for key, value in _meta().to_map().items():
        if key != missing:
            model.metadata_props.add(key=key, value=value)
    path = _save(model, tmp_path / "partial.onnx")
    with pytest.raises(CtdError) as e:
        read_model_metadata(path)
    assert str(path) in str(e.value) and missing in str(e.value)


def test_other_major_versions_are_rejected(tmp_path):
    major = int(ctd_runtime.__version__.split(".")[0])
    newer = _save(set_metadata(_identity_model(), replace(_meta(), ctd_version=f"{major + 1}.0.0")),
                  tmp_path / "newer.onnx")
    with pytest.raises(CtdError, match="newer"):
        read_model_metadata(newer)
    same_major = replace(_meta(), ctd_version=f"{major}.99.3")
    assert read_model_metadata(_save(set_metadata(_identity_model(), same_major), tmp_path / "ok.onnx")) == same_major


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("ctd.decode", "softargmax", "ctd.decode"),
        ("ctd.precision", "fp64", "ctd.precision"),
        ("ctd.normalization", "{not json", "ctd.normalization"),
        ("ctd.input_size", "big", "ctd.input_size"),
        ("ctd.codec", '{"stride": 3, "sigma": 1.5}', "ctd.codec"),
        ("ctd.version", "dev", "ctd.version"),
        ("ctd.schema", '{"name": "x"}', "schema"),
    ],
)
def test_bad_values_are_named(key, value, message):
    meta = _meta().to_map()
    meta[key] = value
    with pytest.raises(CtdError, match=message):
        ModelMetadata.from_map(meta, where="model.onnx")


def test_unreadable_files(tmp_path):
    with pytest.raises(CtdError, match="not found"):
        read_model_metadata(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(CtdError, match="cannot load"):
        read_model_metadata(junk)


def test_metadata_for_run_writes_the_training_crop_rule():
    from ctd_runtime.crop_rule import CropSpec

    run = replace(fake_run(), config={"crop": "schema", "margin": 0.3, "crop_scale": 2.0})
    meta = metadata_for_run(run, "argmax")
    assert meta.crop == CropSpec("schema", 0.3, 2.0)
    assert ModelMetadata.from_map(meta.to_map()).crop == meta.crop
