"""The Landmarker: backend by file, the coarse-to-fine face box, a given box, no face on noise,
batches, threads, wrong model files. A real (tiny) exported model where one is needed."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import ctd_runtime
from ctd_runtime import landmarker as lmk
from ctd_runtime.backends import BaseBackend
from ctd_runtime.backends.tensorrt_backend import TensorRTBackend
from ctd_runtime.crop_rule import CropSpec, crop_from_box
from ctd_runtime.errors import CtdError
from ctd_runtime.landmarker import Landmarker, LandmarkerOptions
from ctd_runtime.model_meta import ModelMetadata
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema
from tests.runtime.conftest import TINY_MARGIN, tiny_blob_image


def _box_of(points: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = points.min(0), points.max(0)
    return (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


def test_given_box_is_one_pass_on_the_training_crop(tiny_model):
    img, centres = tiny_blob_image(3)
    lm = Landmarker(tiny_model)
    box = _box_of(centres)
    det = lm.detect(img, box=box)
    assert det.found and det.box_source == "given" and len(det.passes) == 1 and det.box == box
    expected = crop_from_box(CropSpec("schema", TINY_MARGIN), box).affine(64)
    assert np.allclose(det.crop_affine, expected)
    assert np.abs(det.landmarks - centres).max() < 3.0
    assert det.pfl_px == pytest.approx(np.linalg.norm(det.landmarks[0] - det.landmarks[1]))
    assert set(det.timings) >= {"pass_1", "flags", "total"} and det.timings["total"] >= det.timings["pass_1"]


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_automatic_box_converges_to_the_given_box_result(tiny_model, seed):
    img, centres = tiny_blob_image(seed, 130, 100)
    lm = Landmarker(tiny_model)
    auto = lm.detect(img)
    given = lm.detect(img, box=_box_of(centres))
    assert auto.found, auto.reason
    assert auto.box_source == "auto" and 2 <= len(auto.passes) <= lm.options.max_passes
    assert auto.passes[0].crop.side == 130  # pass 1: the square holding the whole image
    auto_error, given_error = np.abs(auto.landmarks - centres).max(), np.abs(given.landmarks - centres).max()
    assert auto_error < 3.5 and auto_error <= given_error + 1.5
    # the last crop is (nearly) the one the rule makes from the last landmarks: the passes stopped moving
    rebuilt = lm.next_crop(auto.final)
    assert abs(rebuilt.side / auto.final.crop.side - 1) <= lm.options.converge_tol


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_no_face_gives_a_reason_and_no_landmarks(tiny_model, kind):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 120, 3), dtype=np.uint8) if kind == "noise" else np.full((120, 120, 3), 70, np.uint8)
    det = Landmarker(tiny_model).detect(img)
    assert not det.found and det.reason
    assert np.isnan(det.landmarks).all() and np.isnan(det.scores).all() and np.isnan(det.pfl_px)
    assert det.passes and det.flags == []
    d = det.to_dict()
    assert d["found"] is False and d["landmarks"][0] == [None, None]


def test_low_scores_mean_no_face():
    det = Landmarker(FakeBackend(score=0.01)).detect(np.zeros((50, 60, 3), np.uint8), box=(10, 10, 20, 20))
    assert not det.found and "score" in det.reason


@pytest.mark.parametrize("span", [0.3, 3.0])
def test_landmarks_spread_unlike_a_face_mean_no_face(span):
    det = Landmarker(FakeBackend(span=span)).detect(np.zeros((200, 200, 3), np.uint8), box=(80, 80, 40, 40))
    assert not det.found and "span a crop" in det.reason and np.isnan(det.landmarks).all()
    assert Landmarker(FakeBackend(span=1.2)).detect(np.zeros((200, 200, 3), np.uint8), box=(80, 80, 40, 40)).found


def test_batch_equals_single_calls(tiny_model):
    lm = Landmarker(tiny_model)
    images = [tiny_blob_image(s, 120, 110)[0] for s in (5, 6)] + [tiny_blob_image(7, 100, 128)[0]]
    batch = lm.detect_batch(images)
    for img, det in zip(images, batch):
        one = lm.detect(img)
        assert det.found == one.found and len(det.passes) == len(one.passes)
        assert np.allclose(det.landmarks, one.landmarks, atol=1e-3, equal_nan=True)
        assert np.allclose(det.final.landmarks, one.final.landmarks, atol=1e-3)
    with pytest.raises(CtdError, match="2 images but 1 boxes"):
        lm.detect_batch(images[:2], [None])


def test_shared_between_threads_gives_the_sequential_results(tiny_model):
    lm = Landmarker(tiny_model, LandmarkerOptions(threads=1))
    images = [tiny_blob_image(s)[0] for s in range(6)]
    sequential = [lm.detect(img).landmarks for img in images]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda img: lm.detect(img).landmarks, images * 2))
    for got, want in zip(concurrent, sequential * 2):
        assert np.array_equal(got, want)


class FakeBackend(BaseBackend):
    """Landmarks at fixed crop pixels; counts overlaps when two threads are inside `_run` at once (what a
    TensorRT execution context must never see)."""

    name = "fake"

    def __init__(self, score: float = 0.9, delay: float = 0.0, span: float = 1.0) -> None:
        super().__init__()
        self.score, self.delay, self.span = score, delay, span
        self.inside = 0
        self.overlaps = 0

    def _open(self) -> ModelMetadata:
        schema = LandmarkSchema("t", ("a", "b", "c"), (0, 1, 2), pfl_pair=(0, 1))
        return ModelMetadata(ctd_runtime.__version__, schema, 64, Normalization("BGR", (0, 0, 0), (1, 1, 1)),
                             "argmax", "fp32", "fused", 4, 1.5, "fake", ("landmarks", "scores"),
                             crop=CropSpec("schema", 0.5))

    def _run(self, image, crop):
        self.inside += 1
        self.overlaps += self.inside > 1
        time.sleep(self.delay)
        half = self.span * 64 / 1.5 / 2  # span 1: the crop less its margin, every crop is a fixed point
        uv = 31.5 + np.array([[-half, -half], [half, -half], [0.0, half]])
        lm = np.einsum("nij,kj->nki", crop[:, :, :2], uv) + crop[:, None, :, 2]
        self.inside -= 1
        return {"landmarks": lm.astype(np.float32), "scores": np.full(lm.shape[:2], self.score, np.float32)}

    def _close(self) -> None:
        pass


def test_the_lock_keeps_backend_calls_apart():
    backend = FakeBackend(delay=0.01)
    lm = Landmarker(backend)
    img = np.zeros((80, 90, 3), np.uint8)
    threads = [threading.Thread(target=lm.detect, args=(img, (10, 10, 40, 40))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.overlaps == 0


def test_cuda_provider_when_onnxruntime_offers_it(monkeypatch, tiny_model):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert lmk.default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert lmk.default_providers() == ["CPUExecutionProvider"]
    lm = Landmarker(tiny_model, LandmarkerOptions(providers=("CPUExecutionProvider",), threads=2))
    assert lm.backend.name == "onnxruntime" and lm.backend.providers == ["CPUExecutionProvider"]
    assert lm.backend.threads == 2 and lm.crop_spec == CropSpec("schema", TINY_MARGIN)


def test_plan_runs_through_the_tensorrt_backend(tmp_path, monkeypatch):
    from tests.runtime import test_tensorrt_backend as fake_trt

    api = fake_trt.FakeCuda()
    monkeypatch.setattr(fake_trt.tb, "import_tensorrt", lambda: fake_trt.make_fake_trt(api))
    monkeypatch.setattr(fake_trt.tb, "load_cuda_api", lambda prefer=None: api)
    plan = fake_trt._write_plan(tmp_path)
    lm = Landmarker(plan)
    assert isinstance(lm.backend, TensorRTBackend) and lm.metadata.precision == "fp16"  # from the manifest
    det = lm.detect(np.full((50, 60, 3), 9, np.uint8), box=(10, 12, 20, 20))
    translation = det.crop_affine[:, 2]
    assert np.allclose(det.passes[0].landmarks, translation + np.arange(3)[:, None], atol=1e-4)
    assert lm.max_batch == 2  # the engine's profile takes two images per call
    batch = lm.detect_batch([np.full((50, 60, 3), 9, np.uint8)] * 3, [(10, 12, 20, 20)] * 3)
    assert all(np.allclose(d.passes[0].landmarks, det.passes[0].landmarks) for d in batch)
    with pytest.raises(CtdError, match="optimisation profile"):
        lm.detect(np.zeros((300, 50, 3), np.uint8), box=(1, 1, 10, 10))
    lm.close()
    assert api.closed == 1


def test_wrong_model_files_are_refused(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"x")
    with pytest.raises(CtdError, match="cannot tell which backend"):
        Landmarker(bad)
    text = tmp_path / "model.onnx"
    text.write_text("not a model")
    with pytest.raises(CtdError) as e:
        Landmarker(text)
    assert str(text) in str(e.value)
    with pytest.raises(CtdError, match="engine plan not found"):
        Landmarker(tmp_path / "missing.plan")


def test_onnx_without_ctd_metadata_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(CtdError) as e:
        Landmarker(path)
    assert str(path) in str(e.value) and "no ctd metadata" in str(e.value)


def test_image_must_be_bgr_uint8():
    lm = Landmarker(FakeBackend())
    with pytest.raises(CtdError, match="BGR uint8"):
        lm.detect(np.zeros((20, 20), np.uint8))
    with pytest.raises(CtdError, match="BGR uint8"):
        lm.detect(np.zeros((20, 20, 3), np.uint16))


def test_options_are_checked():
    with pytest.raises(CtdError):
        LandmarkerOptions(min_passes=3, max_passes=2)
    with pytest.raises(CtdError):
        LandmarkerOptions(max_spread_ratio=1.0)


def test_detector_box_is_refined_and_no_detection_is_no_face():
    class Detector:
        def __init__(self, boxes):
            self.found = boxes

        def boxes(self, image):
            return self.found

    img = np.zeros((100, 100, 3), np.uint8)
    det = Landmarker(FakeBackend(), detector=Detector([(20, 20, 50, 50, 0.9)])).detect(img)
    assert det.found and det.box_source == "detector" and det.box == (20, 20, 50, 50) and "detector" in det.timings
    none = Landmarker(FakeBackend(), detector=Detector([])).detect(img)
    assert not none.found and "detector found no face" in none.reason and none.passes == ()


def test_yunet_file_must_exist(tmp_path):
    with pytest.raises(CtdError, match="face detector file not found"):
        Landmarker(FakeBackend(), LandmarkerOptions(face_detector=tmp_path / "yunet.onnx"))
