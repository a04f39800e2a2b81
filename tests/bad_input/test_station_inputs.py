"""The station's bad inputs (issue 10, item 7) and the fused graph's (ONNX Runtime cannot refuse
an all-zero or NaN crop or a 1x1 image; every ctd entry point must): `ctd infer` makes an error
result for that item naming the file, goes on with the batch and exits 1; a wrong model file or
option is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from tests.bad_input._corpus import ctd, photo, temporaries
from tests.runtime._station_data import blob_png, huge_png_header, plane_capture, truncated_copy
from tests.runtime.conftest import tiny_blob_image


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _jpeg(path: Path, cut: int = 0, smudge: bool = False) -> Path:
    data = cv2.imencode(".jpg", photo(120, 110))[1].tobytes()
    if smudge:
        mid = len(data) // 2
        data = data[:mid] + b"\x00" * 64 + data[mid + 64:]
    return _write(path, data[: len(data) - cut])


def _truncated_png(d: Path) -> Path:
    blob_png(d / "whole.png", 1)
    truncated_copy(d / "whole.png", d / "t.png")
    return d / "t.png"


def _huge_png(d: Path) -> Path:
    huge_png_header(d / "h.png")
    return d / "h.png"


def _tiny_png(d: Path) -> Path:
    cv2.imwrite(str(d / "p.png"), np.zeros((1, 1, 3), np.uint8))
    return d / "p.png"


def _capture_with_truncated_texture(d: Path) -> Path:
    obj = plane_capture(d / "cap", 4)
    texture = obj.with_suffix(".png")
    texture.write_bytes(texture.read_bytes()[:-12])
    return obj


def _capture_without_texture(d: Path) -> Path:
    obj = plane_capture(d / "notex", 5)
    obj.with_suffix(".png").unlink()
    return obj


def _sidecar(d: Path, value) -> Path:
    blob_png(d / "s.png", 2)
    (d / "s.png.json").write_text(json.dumps({"pixel_spacing_mm": value}))
    return d / "s.png"


TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
# fault -> (make it in folder d: the input to give, the file the error names, what it says)
STATION_FAULTS = {
    "truncated png": (_truncated_png, "t.png", "truncated PNG"),
    "jpeg without its end": (lambda d: _jpeg(d / "t.jpg", cut=400), "t.jpg", "truncated JPEG"),
    "jpeg with corrupt data": (lambda d: _jpeg(d / "c.jpg", smudge=True), "c.jpg", "Corrupt JPEG data"),
    "text named png": (lambda d: _write(d / "n.png", "hello"), "n.png", "cannot decode"),
    "empty file": (lambda d: _write(d / "e.png", b""), "e.png", "empty file"),
    "huge image": (_huge_png, "h.png", "40000x40000"),
    "1x1 image": (_tiny_png, "p.png", "smaller than 8x8"),
    "empty obj": (lambda d: _write(d / "e.obj", "# nothing\n"), "e.obj", "no vertices"),
    "malformed obj": (lambda d: _write(d / "m.obj", TRIANGLE + "f 1 2 x\n"), "m.obj", "line 4"),
    "uvs outside [0, 1]": (lambda d: _write(d / "u.obj", TRIANGLE + "vt 0 0\nvt 1.5 0\nvt 0 1\nf 1/1 2/2 3/3\n"),
                           "u.obj", "outside [0, 1]"),
    "texture missing": (_capture_without_texture, "notex/capture.mtl", "not found"),
    "texture truncated": (_capture_with_truncated_texture, "cap/capture.png", "truncated PNG"),
    "zero spacing sidecar": (lambda d: _sidecar(d, 0), "s.png.json", "spacing must be"),
    "negative spacing sidecar": (lambda d: _sidecar(d, -0.1), "s.png.json", "spacing must be"),
    "spacing sidecar not a number": (lambda d: _sidecar(d, "wide"), "s.png.json", "spacing must be a number"),
}


def _results(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("fault", list(STATION_FAULTS))
def test_a_bad_capture_in_a_batch(fault, tmp_path, capsys, tiny_model):
    make, names, says = STATION_FAULTS[fault]
    d = tmp_path / "in"
    d.mkdir()
    blob_png(d / "good.png", 3)
    bad = make(d)
    out = tmp_path / "out"
    code, said, err = ctd(["infer", tiny_model, d / "good.png", bad, "--out", out], capsys)
    assert code == 1, err
    rows = _results(out)
    assert rows.pop("good.png")["status"] == "ok", "the batch goes on past the bad capture"
    (row,) = rows.values()
    assert row["status"] == "error" and row["error"].startswith(f"{d / names}: ") and says in row["error"], row
    assert f"failed: {row['error']}" in err and "1 failed" in said
    assert (out / "results.csv").is_file() and not temporaries(tmp_path)


@pytest.mark.parametrize("kind", ["gray8", "gray16", "bgr16"])
def test_grayscale_and_16_bit_images_are_measured(kind, tmp_path, capsys, tiny_model):
    img, _ = tiny_blob_image(6)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    pixels = {"gray8": gray, "gray16": gray.astype(np.uint16) * 257, "bgr16": img.astype(np.uint16) * 257}[kind]
    cv2.imwrite(str(tmp_path / "a.png"), pixels)
    code, _, err = ctd(["infer", tiny_model, tmp_path / "a.png", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert _results(tmp_path / "o")["a.png"]["status"] in ("ok", "no_face")


def _plain_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(path))
    return path


MODEL_FAULTS = {
    "a checkpoint given as model": (lambda d: _write(d / "weights.pt", b"x"), "cannot tell which backend"),
    "text named model.onnx": (lambda d: _write(d / "model.onnx", "not onnx"), "cannot load the ONNX model"),
    "an ONNX file without ctd metadata": (lambda d: _plain_onnx(d / "plain.onnx"), "no ctd metadata"),
    "a model that is not there": (lambda d: d / "gone.onnx", "not found"),
}


@pytest.mark.parametrize("fault", list(MODEL_FAULTS))
def test_a_wrong_model_file(fault, tmp_path, capsys):
    pytest.importorskip("onnx")
    make, says = MODEL_FAULTS[fault]
    blob_png(tmp_path / "a.png", 1)
    model = make(tmp_path)
    code, _, err = ctd(["infer", model, tmp_path / "a.png", "--out", tmp_path / "o"], capsys)
    assert code == 2 and f"{model}: " in err and says in err, err
    assert not (tmp_path / "o").exists()


GRAPH_FAULTS = {
    "all-zero crop": (lambda img, a: (img, np.zeros_like(a)), "crop affine 0 is degenerate"),
    "NaN crop": (lambda img, a: (img, np.full_like(a, np.nan)), "non-finite"),
    "inf in the crop": (lambda img, a: (img, a + np.array([[0, 0, np.inf], [0, 0, 0]])), "non-finite"),
    "collinear crop": (lambda img, a: (img, np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]])), "degenerate"),
    "1x1 image": (lambda img, a: (img[:1, :1], a), "image of 1x1 px"),
    "4x6 image": (lambda img, a: (img[:4, :6], a), "image of 6x4 px"),
    "float image": (lambda img, a: (img.astype(np.float32), a), "must be uint8"),
    "gray image": (lambda img, a: (img[..., 0], a), "BGR"),
}


@pytest.mark.parametrize("fault", list(GRAPH_FAULTS))
def test_the_fused_graph_is_not_given_what_it_cannot_refuse(fault, tiny_model):
    from ctd_runtime.backends import create_backend
    from ctd_runtime.geometry import crop_affine

    img, _ = tiny_blob_image(1)
    affine = crop_affine((55.0, 60.0), 80.0, 64).astype(np.float32)
    make, says = GRAPH_FAULTS[fault]
    image, crop = make(img, affine)
    with create_backend(tiny_model) as backend:
        backend.run(img, affine)  # the good input runs
        with pytest.raises(CtdError, match=says.replace("[", r"\[")):
            backend.run(image, crop)
