"""INT8 calibration on a session of ours (`ctd_export.calibration.calibrate`): the same method's
ranges, hence the same quantised model, as ONNX Runtime's calibrator inside quantize_static, run
with the export's thread count and spinning off."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ctd_export import int8
from ctd_runtime.backends import ort_session
from tests.export._tiny_fused import export_fused, sample_set, trained_predictor


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return export_fused(trained_predictor(), tmp_path_factory.mktemp("calib") / "model.onnx", decode="dark")


def _scales(path) -> tuple[list[str], dict[str, np.ndarray]]:
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = {n.input[1]: inits[n.input[1]] for n in model.graph.node
              if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits}
    return [n.op_type for n in model.graph.node], scales


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_own_session_gives_the_ranges_of_onnxruntimes_calibrator(source, tmp_path, monkeypatch, method):
    calib = sample_set(12, seed=9)[0]
    config = int8.Int8Config(method=method)
    opened = []
    real_open = ort_session.open_session
    monkeypatch.setattr(ort_session, "open_session", lambda path, **kw: opened.append((str(path), kw)) or
                        real_open(path, **kw))
    ours = int8.quantize_int8(source, calib, tmp_path / "ours.onnx", config, threads=1)
    assert [kw for p, kw in opened if p.endswith("augmented.onnx")] == [{"threads": 1}]  # spinning off by default
    monkeypatch.setattr(int8, "_takes_ranges", lambda: False)  # ONNX Runtime's own calibration session
    theirs = int8.quantize_int8(source, calib, tmp_path / "theirs.onnx", config)
    assert ours.quantized_op_counts == theirs.quantized_op_counts == {"Conv": 4}
    ops_a, scales_a = _scales(ours.path)
    ops_b, scales_b = _scales(theirs.path)
    assert ops_a == ops_b and scales_a.keys() == scales_b.keys() and len(scales_a) > 8
    for name in scales_a:  # float rounding of another kernel order, nothing more
        np.testing.assert_allclose(scales_a[name], scales_b[name], rtol=2e-5, err_msg=name)


def test_percentile_and_minmax_differ(source, tmp_path):
    """The comparison above can tell methods apart: their activation scales are not the same
    (entropy with 128 bins chose minmax's ranges on this model, as in docs/int8.md)."""
    calib = sample_set(12, seed=9)[0]
    a = _scales(int8.quantize_int8(source, calib, tmp_path / "a.onnx", int8.Int8Config(method="minmax")).path)[1]
    b = _scales(int8.quantize_int8(source, calib, tmp_path / "b.onnx", int8.Int8Config(method="percentile", percentile=99.0)).path)[1]
    assert any(not np.allclose(a[k], b[k], rtol=1e-3) for k in a)
