"""The station's engine check: an engine is judged against model.onnx (ONNX Runtime) by the gate
of its precision; a stand-in backend takes the GPU's place (its landmarks shifted on purpose)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ctd_runtime.backends import create_backend
from ctd_runtime.engine.check import check_engine, check_inputs, synthetic_images
from ctd_runtime.errors import CtdError


class Shifted:
    """The ONNX Runtime backend of the same model, its landmarks moved by `shift` px and its
    metadata claiming `precision` (what an FP16 engine would say)."""

    def __init__(self, path, shift: float, precision: str, every: bool = True) -> None:
        self.inner, self.shift, self.precision, self.every = create_backend(path), shift, precision, every

    def __enter__(self):
        self.inner.open()
        self.metadata = dataclasses.replace(self.inner.metadata, precision=self.precision)
        return self

    def __exit__(self, *exc):
        self.inner.close()

    def run(self, image, crop):
        lm, sc = self.inner.run(image, crop)
        lm = lm.copy()
        if self.every:
            lm += self.shift
        else:
            lm[:, 0, 0] += self.shift          # one landmark only
        return lm, sc


def test_the_precision_gate_judges_the_engine(tiny_model):
    ok = check_engine("model.plan", tiny_model, open_backend=lambda p: Shifted(tiny_model, 0.03, "fp16"))
    assert ok.passed and ok.statistic == "mean" and ok.mean_px == pytest.approx(0.03 * np.sqrt(2), rel=1e-3)
    bad = check_engine("model.plan", tiny_model, open_backend=lambda p: Shifted(tiny_model, 0.5, "fp16"))
    assert not bad.passed and "FAILED" in bad.summary()
    # FP16: one landmark far off on every image passes a mean gate; an FP32 engine is held to the max
    one = lambda prec: (lambda p: Shifted(tiny_model, 0.2, prec, every=False))  # noqa: E731
    assert check_engine("model.plan", tiny_model, open_backend=one("fp16")).passed
    assert not check_engine("model.plan", tiny_model, open_backend=one("fp32")).passed


def test_inputs_and_refusals(tmp_path, tiny_model):
    a, b = synthetic_images(2), synthetic_images(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0].shape == (480, 640, 3)
    imgs, crops, source = check_inputs(None, 64)
    assert len(imgs) == len(crops) and "synthetic" in source
    with pytest.raises(CtdError, match="no image files"):
        check_inputs(tmp_path, 64)
    with pytest.raises(CtdError, match="FP32 model.onnx"):
        check_engine("model.plan", tmp_path / "model.onnx")


def test_a_failing_engine_is_removed(tmp_path, tiny_model, monkeypatch):
    from ctd_runtime.cli import engine as engine_cli

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine")
    (tmp_path / "model.plan.json").write_text("{}")
    import ctd_runtime.engine.check as check_mod

    original = check_mod.check_engine

    def failing(p, ref, images=None):
        return original(p, tiny_model, images, open_backend=lambda _: Shifted(tiny_model, 3.0, "fp16"))

    monkeypatch.setattr(engine_cli, "check_engine", failing)
    with pytest.raises(CtdError, match="failed its check"):
        engine_cli.gate_engine(plan, tiny_model, None)
    assert not plan.exists() and not (tmp_path / "model.plan.json").exists()
