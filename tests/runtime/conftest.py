"""Fixtures of the station tests: a real exported model (the tiny fused model of
tests/export/_tiny_fused.py; it needs torch to make, so the tests that use it skip without torch,
while ctd_runtime itself never imports it) and synthetic blob images it was trained on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

TINY_MARGIN = 0.8  # the tiny predictor is fitted on squares around its three blobs, margin 0.8


def tiny_blob_image(seed: int, h: int = 120, w: int = 110) -> tuple[np.ndarray, np.ndarray]:
    """A BGR uint8 image with the tiny model's three blobs, and their centres (3, 2) px."""
    from tests.export._tiny_fused import synthetic_image

    return synthetic_image(np.random.default_rng(seed), h, w)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """model.onnx of the tiny fused model, with ctd.crop = schema rule, margin 0.8 (how it was trained)."""
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from ctd_export.metadata import set_metadata
    from ctd_runtime.crop_rule import CropSpec
    from tests.export import _tiny_fused as tf

    path = tf.export_fused(tf.trained_predictor(0), tmp_path_factory.mktemp("tiny") / "model.onnx")
    proto = onnx.load(str(path))
    set_metadata(proto, replace(tf.tiny_metadata(), crop=CropSpec("schema", TINY_MARGIN)))
    onnx.save(proto, str(path))
    return path
