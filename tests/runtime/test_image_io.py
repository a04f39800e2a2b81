"""The one image reader: whole files decode to BGR uint8; truncated or corrupt ones are refused,
naming the file and why, and the decoders' stderr warnings are attributed to the file."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_runtime.image_io import ImageError, header_size, read_image, structural_fault


def _photo(h: int = 120, w: int = 160) -> np.ndarray:
    """Smooth gradients plus noise: JPEG keeps its structure, so a cut is a real cut."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _encoded(ext: str, image: np.ndarray | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, _photo() if image is None else image)
    assert ok
    return buf.tobytes()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tif", ".webp"])
def test_whole_files_read_as_bgr_uint8(tmp_path, ext, capfd):
    path = _write(tmp_path, "a" + ext, _encoded(ext))
    image = read_image(path)
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    if ext != ".jpg" and ext != ".webp":  # lossless
        np.testing.assert_array_equal(image, _photo())
    assert capfd.readouterr().err == ""


def test_jpeg_with_trailing_padding_is_whole(tmp_path):
    path = _write(tmp_path, "a.jpg", _encoded(".jpg") + b"\x00" * 7 + b"\r\n")
    assert read_image(path).shape == (120, 160, 3)


@pytest.mark.parametrize("case, cut, why", [
    ("jpg 35%", 0.35, "truncated JPEG"),
    ("jpg 90%", 0.90, "truncated JPEG"),
    ("jpg minus FFD9", -2, "truncated JPEG"),
    ("png 50%", 0.5, "truncated PNG"),
    ("png minus IEND", -12, "truncated PNG"),
    ("bmp 60%", 0.6, "cannot decode"),
    ("tif 50%", 0.5, "cannot decode"),
    ("webp 70%", 0.7, "cannot decode"),
])
def test_truncated_files_are_refused(tmp_path, capfd, case, cut, why):
    data = _encoded("." + case.split()[0])
    data = data[:int(len(data) * cut)] if cut > 0 else data[:cut]
    path = _write(tmp_path, "x." + case.split()[0], data)
    with pytest.raises(ImageError, match=why) as e:
        read_image(path)
    assert e.value.path == path and str(e.value).startswith(f"{path}: ")
    assert capfd.readouterr().err == "", "the decoder's messages belong in the error, not on stderr"


def test_a_decoder_warning_is_captured_and_attributed(tmp_path, capfd):
    """Garbage inside the entropy-coded data: libjpeg decodes, warns `Corrupt JPEG data` on
    stderr, and cv2.imread would return an image."""
    data = _encoded(".jpg")
    mid = len(data) // 2
    path = _write(tmp_path, "c.jpg", data[:mid] + b"\x00" * 64 + data[mid + 64:])
    assert cv2.imread(str(path)) is not None  # what OpenCV alone accepts
    capfd.readouterr()
    with pytest.raises(ImageError, match="damaged file: Corrupt JPEG data") as e:
        read_image(path)
    assert e.value.path == path
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("data, why", [
    (b"", "empty file"),
    (b"this is a text file, not an image\n", "cannot decode"),
    (b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9", "cannot decode"),
])
def test_non_images_are_refused(tmp_path, data, why):
    path = _write(tmp_path, "n.jpg", data)
    with pytest.raises(ImageError, match=why):
        read_image(path)


def test_missing_and_folder(tmp_path):
    with pytest.raises(CtdError, match="image file not found"):
        read_image(tmp_path / "gone.png")
    with pytest.raises(CtdError, match="not a file"):
        read_image(tmp_path)


def test_gray_16bit_and_alpha_are_converted(tmp_path):
    gray16 = (np.arange(40 * 50).reshape(40, 50) * 32).astype(np.uint16)
    gray16[0, 0], gray16[0, 1] = 65535, 0
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    image = read_image(tmp_path / "g16.png")
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    expected = np.round(gray16.astype(np.float64) * 255 / 65535)
    np.testing.assert_array_equal(image[..., 1], expected)  # full range to full range
    assert image[0, 0, 0] == 255 and image[0, 1, 0] == 0

    bgra = np.dstack([_photo(), np.full((120, 160), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), _photo())

    gray = _photo()[..., 1]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.dstack([gray] * 3))


def test_float_images_are_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "f.tiff"), np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ImageError, match="pixel type float32"):
        read_image(tmp_path / "f.tiff")


def test_too_large_is_refused_from_the_header(tmp_path, monkeypatch):
    jpg = _write(tmp_path, "a.jpg", _encoded(".jpg"))
    png = _write(tmp_path, "a.png", _encoded(".png"))
    assert header_size(jpg.read_bytes()) == (160, 120) and header_size(png.read_bytes()) == (160, 120)
    decoded: list[int] = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))
    for path in (jpg, png):
        with pytest.raises(ImageError, match="160x120 px .* larger than"):
            read_image(path, max_pixels=160 * 119)
    assert not decoded, "a too-large PNG or JPEG is refused before it is decoded"
    bmp = _write(tmp_path, "a.bmp", _encoded(".bmp"))
    with pytest.raises(ImageError, match="larger than"):
        read_image(bmp, max_pixels=1000)


def test_structural_fault_of_bytes():
    assert structural_fault(_encoded(".jpg")) is None
    assert structural_fault(_encoded(".png")) is None
    assert "JPEG" in structural_fault(_encoded(".jpg")[:-2])
    assert structural_fault(b"BM not checked here") is None


def test_threads_get_their_own_verdicts(tmp_path, capfd):
    """stderr is process-wide: each decode owns it in turn, so a warning is never given to the
    image another thread was reading."""
    good = _write(tmp_path, "good.jpg", _encoded(".jpg"))
    data = _encoded(".jpg")
    mid = len(data) // 2
    bad = _write(tmp_path, "bad.jpg", data[:mid] + b"\x00" * 64 + data[mid + 64:])
    results: dict[str, list[str]] = {"good": [], "bad": []}

    def work(name: str, path: Path) -> None:
        for _ in range(15):
            try:
                read_image(path)
                results[name].append("ok")
            except ImageError as e:
                results[name].append(e.reason)

    threads = [threading.Thread(target=work, args=(n, p)) for n, p in [("good", good), ("bad", bad)] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["good"] == ["ok"] * 30
    assert len(results["bad"]) == 30 and all("Corrupt JPEG data" in r for r in results["bad"])
    assert capfd.readouterr().err == ""


def test_log_lines_of_other_libraries_are_not_held_against_the_image():
    """MediaPipe's threads write glog/absl lines to fd 2 at any time; a decoder's message still counts."""
    from ctd_runtime.image_io import _one_line

    foreign = ("W0000 00:00:1764633600.123456   31998 inference_feedback_manager.cc:114] Feedback manager "
               "requires a model with a single signature inference.\n"
               "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
               "I0000 00:00:1764633600.2   31998 gl_context.cc:369] GL version: 3.2\n")
    assert _one_line([foreign]) == ""
    assert _one_line([foreign + "Premature end of JPEG file\n"]) == "Premature end of JPEG file"
