"""Calibration and comparison samples: images with the crop around their ground-truth points, as
the training dataset crops them, the reader that feeds them to ONNX Runtime's quantiser, and the
calibration run itself.

A sample is (image uint8 [1, H, W, 3] BGR, crop affine float32 [1, 2, 3]): one fused-graph call.

`calibrate` runs ONNX Runtime's own calibrator (its graph with every calibrated tensor's
ReduceMin/ReduceMax, or the tensors themselves for the histogram methods, added as outputs; its
range computation), but collects the data on a session from
`ctd_runtime.backends.ort_session.open_session` that replaces the one the calibrator makes for
itself (that one is still created, once, by `create_calibrator`, and then unused): it has graph
optimisation off (no NCHWc layout, no
Conv + ReLU fusion), every core's intra-op thread and spinning on, so it ran the fused graph about
half as fast as an ordinary session on this CPU and took the cores from anything else running
(a training, the export's own PyTorch). The ranges are the same method's, to float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ctd_runtime import geometry
from ctd_runtime.errors import CtdError

Sample = tuple[np.ndarray, np.ndarray]


def crop_around(points: np.ndarray, input_size: int, margin: float = 0.25) -> np.ndarray:
    """The crop affine [2, 3] of the square around `points` (all annotated points of an image,
    as the training dataset crops), float32."""
    center, side = geometry.square_box(points, margin)
    return geometry.crop_affine(center, side, input_size).astype(np.float32)


def calibration_samples(
    images: Any, indices: Sequence[int], input_size: int, num_images: int, margin: float = 0.25, seed: int = 0
) -> list[Sample]:
    """Up to `num_images` samples drawn (seeded) from `indices` of an `AnnotatedImages`: each image
    with the crop around its ground-truth points."""
    idx = list(indices)
    if not idx:
        raise CtdError("no images to calibrate on")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(idx), size=min(num_images, len(idx)), replace=False).tolist())
    out = []
    for j in chosen:
        i = idx[j]
        image = images.load_image(i)
        out.append((np.ascontiguousarray(image[None]), crop_around(images.points[i], input_size, margin)[None]))
    return out


def run_config_samples(run: Any, num_images: int, seed: int = 0, split: str = "train") -> list[Sample]:
    """Calibration samples from a loaded run's training split (its config names data and split)."""
    from ctd_train.config import TrainConfig, split_indices
    from ctd_train.data.annotations import read_annotations

    if not (getattr(run, "config", None) or {}).get("data"):
        raise CtdError("INT8 calibration needs the run's training images, and the run's config names no "
                       "data folder", path=getattr(run, "run_dir", None))
    cfg = TrainConfig.from_dict(run.config)
    images = read_annotations(cfg.data, validate_images=False)
    indices = split_indices(images.subjects, cfg)[split]
    return calibration_samples(images, indices, run.input_size, num_images, cfg.margin, seed)


def parity_samples(images: Sequence[np.ndarray], crops: np.ndarray) -> list[Sample]:
    """The parity gate's images and affines [N, 2, 3] as one-image samples."""
    return [(img[None], np.asarray(a, np.float32)[None]) for img, a in zip(images, crops)]


class FusedCalibrationReader:
    """ONNX Runtime `CalibrationDataReader` feeding (image, crop) samples, one per call, to the
    fused graph's two inputs (by position: image first, crop second). `on_sample(done, total)`
    hears of each sample handed out (the calibration's progress)."""

    def __init__(self, samples: Sequence[Sample], input_names: Sequence[str] = ("image", "crop"),
                 on_sample: Callable[[int, int], None] | None = None):
        if not samples:
            raise CtdError("no calibration samples")
        self.samples = list(samples)
        self.input_names = tuple(input_names)
        self.on_sample = on_sample
        self._it: Iterator[Sample] | None = None
        self._given = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = iter(self.samples)
        sample = next(self._it, None)
        if self.on_sample is not None:  # asked for the next one: the ones before have been run
            self.on_sample(self._given, len(self.samples))
        if sample is None:
            return None
        self._given += 1
        image, crop = sample
        return {self.input_names[0]: np.ascontiguousarray(image, np.uint8),
                self.input_names[1]: np.ascontiguousarray(crop, np.float32)}

    def rewind(self) -> None:
        self._it = None
        self._given = 0

    def __len__(self) -> int:
        return len(self.samples)


def as_ort_reader(reader: FusedCalibrationReader) -> Any:
    """The reader as a subclass of ONNX Runtime's CalibrationDataReader (imported lazily)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def get_next(self):
            return reader.get_next()

        def rewind(self):
            reader.rewind()

    return _Reader()


CALIBRATORS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # onnxruntime CalibrationMethod


def calibrate(model_path: str | Path, reader: FusedCalibrationReader, method: str, op_types: Sequence[str],
              work_dir: str | Path, percentile: float = 99.999, threads: int | None = None) -> Any:
    """The tensor ranges (onnxruntime `TensorsData`) of ONNX Runtime's `method` calibrator over the
    reader's samples, for the float tensors of the nodes of `op_types` (what `quantize_static`
    calibrates), run through `open_session` (see the module docstring). The augmented graph is
    written into `work_dir`."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    from ctd_runtime.backends.ort_session import open_session

    if method not in CALIBRATORS:
        raise CtdError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATORS)}")
    calibrator = create_calibrator(
        Path(model_path), list(op_types), augmented_model_path=str(Path(work_dir) / "augmented.onnx"),
        calibrate_method=getattr(CalibrationMethod, CALIBRATORS[method]), extra_options={"percentile": percentile},
    )
    calibrator.infer_session = open_session(calibrator.augmented_model_path, threads=threads)
    calibrator.collect_data(as_ort_reader(reader))
    return calibrator.compute_data()
