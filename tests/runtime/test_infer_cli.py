"""`ctd infer`: images, folders and 3dMD captures in; results.jsonl, results.csv and overlays out;
every bad input an error for that item naming the file, the batch going on, exit code 1."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctd_runtime.captures import find_captures
from tests._cli import run_ctd
from ctd_runtime.results import CSV_HEAD
from tests.runtime._station_data import (
    TEXTURE, blob_png, huge_png_header, plane_capture, plane_pfl_3d, truncated_copy,
)
from tests.runtime.conftest import tiny_blob_image


ctd = run_ctd


def _rows(out: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    with (out / "results.csv").open() as f:
        return lines, list(csv.DictReader(f))


def test_images_folders_and_a_mesh_capture(tiny_model, tmp_path, capsys):
    data = tmp_path / "in"
    centres = blob_png(data / "one.png", 1)
    blob_png(data / "sub" / "two.jpg", 2)
    obj = plane_capture(data / "mesh", 4)
    (data / "one.png.json").write_text(json.dumps({"pixel_spacing_mm": 0.2}))  # sidecar beats nothing
    out = tmp_path / "out"
    code, stdout, _ = ctd(["infer", tiny_model, data, "--out", out], capsys)
    assert code == 0, stdout
    lines, rows = _rows(out)
    assert [r["name"] for r in lines] == ["mesh__capture.obj", "one.png", "sub__two.jpg"]  # the texture is no capture
    assert all(r["status"] == "ok" for r in lines)
    one = lines[1]
    xy = np.array([[lm["x"], lm["y"]] for lm in one["landmarks"]])
    assert np.abs(xy - centres).max() < 4
    assert one["pfl_mm"] == pytest.approx(one["pfl_px"] * 0.2) and one["spacing_source"] == "sidecar"
    assert lines[2]["pfl_mm"] is None and lines[2]["pfl_3d_mm"] is None
    mesh = lines[0]
    assert mesh["kind"] == "mesh" and mesh["texture"] == str(obj.with_suffix(".png"))
    assert (mesh["width"], mesh["height"]) == TEXTURE
    mxy = np.array([[lm["x"], lm["y"]] for lm in mesh["landmarks"]])
    assert mesh["pfl_3d_mm"] == pytest.approx(plane_pfl_3d(mxy), abs=1e-6)
    assert set(mesh["landmarks"][0]) >= {"x3d", "y3d", "z3d"}
    assert set(one["timings"]) >= {"read_s", "detect_s", "pfl3d_s", "overlay_s", "total_s"}
    # the CSV: the same captures, every landmark's x, y, score
    assert list(rows[0])[: len(CSV_HEAD)] == list(CSV_HEAD)
    assert [r["name"] for r in rows] == [r["name"] for r in lines]
    assert float(rows[1]["p1_score"]) == pytest.approx(one["landmarks"][1]["score"])
    assert float(rows[0]["pfl_3d_mm"]) == pytest.approx(mesh["pfl_3d_mm"])
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == ["mesh__capture.obj.png", "one.png.png", "sub__two.jpg.png"]
    assert cv2.imread(str(out / "overlays" / "one.png.png")).shape == (120, 110, 3)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary file left


def test_given_box_and_spacing_option(tiny_model, tmp_path, capsys):
    image = tmp_path / "a.png"
    centres = blob_png(image, 3)
    lo, hi = centres.min(0), centres.max(0)
    box = ",".join(f"{v:.3f}" for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]))
    code, _, _ = ctd(["infer", tiny_model, image, "--box", box, "--spacing", "0.1", "--out", tmp_path / "o",
                      "--no-overlays"], capsys)
    assert code == 0
    (r,), _ = _rows(tmp_path / "o")
    assert r["box_source"] == "given" and r["passes"] == 1 and r["spacing_source"] == "option"
    assert r["pfl_mm"] == pytest.approx(0.1 * r["pfl_px"])
    assert not (tmp_path / "o" / "overlays").exists()


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Broken captures -> (the file their error must name first, a word it must contain)."""
    good = folder / "good.png"
    blob_png(good, 1)
    truncated_copy(good, folder / "truncated.png")
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    (folder / "not_an_image.png").write_bytes(b"hello, I am text")
    huge_png_header(folder / "huge.png")
    (folder / "empty.obj").write_text("# nothing\n")
    (folder / "malformed.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n")
    (folder / "uv_outside.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1.5 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    notex = plane_capture(folder / "notex", 5)
    notex.with_suffix(".png").unlink()  # the MTL names a texture that is not there
    blob_png(folder / "zero_spacing.png", 2)
    (folder / "zero_spacing.png.json").write_text('{"pixel_spacing_mm": 0}')
    return {
        "truncated.png": (folder / "truncated.png", "truncated PNG"),
        "garbage.jpg": (folder / "garbage.jpg", "truncated JPEG"),
        "not_an_image.png": (folder / "not_an_image.png", "cannot decode"),
        "huge.png": (folder / "huge.png", "40000x40000"),
        "empty.obj": (folder / "empty.obj", "no vertices"),
        "malformed.obj": (folder / "malformed.obj", "line 4"),
        "uv_outside.obj": (folder / "uv_outside.obj", "outside [0, 1]"),
        "notex__capture.obj": (folder / "notex" / "capture.mtl", "not found"),
        "zero_spacing.png": (folder / "zero_spacing.png.json", "spacing must be"),
    }


def test_a_batch_goes_on_past_bad_inputs_and_exits_non_zero(tiny_model, tmp_path, capsys):
    data = tmp_path / "in"
    data.mkdir()
    expected = _bad_inputs(data)
    img, _ = tiny_blob_image(6)
    cv2.imwrite(str(data / "gray16.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    out = tmp_path / "out"
    code, stdout, stderr = ctd(["infer", tiny_model, data, "--out", out], capsys)
    assert code == 1
    lines, rows = _rows(out)
    by_name = {r["name"]: r for r in lines}
    assert by_name["good.png"]["status"] == "ok"
    assert by_name["gray16.png"]["status"] != "error"  # 16-bit grayscale is converted, not refused
    err = " ".join(stderr.split())
    for name, (path, word) in expected.items():
        r = by_name[name]
        assert r["status"] == "error" and r["error"].startswith(f"{path}: ") and word in r["error"], (name, r)
        assert f"failed: {r['error']}" in err
    assert f"{len(expected)} failed" in stdout
    assert [r["status"] for r in rows] == [r["status"] for r in lines]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["good.png.png", "gray16.png.png"]


@pytest.mark.parametrize("spacing", ["0", "-0.2", "nan"])
def test_bad_spacing_option_is_refused_before_anything(tiny_model, tmp_path, capsys, spacing):
    blob_png(tmp_path / "a.png", 1)
    code, _, err = ctd(["infer", tiny_model, tmp_path / "a.png", "--spacing", spacing, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "--spacing" in err and "spacing" in err
    assert not (tmp_path / "o").exists()


def test_wrong_model_files(tmp_path, capsys):
    blob_png(tmp_path / "a.png", 1)
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"x")
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not onnx at all")
    for model, word in ((bad, "cannot tell which backend"), (fake, "cannot load the ONNX model")):
        code, _, err = ctd(["infer", model, tmp_path / "a.png", "--out", tmp_path / "o"], capsys)
        err = " ".join(err.split())
        assert code == 2 and f"{model}: " in err and word in err, err
    assert not (tmp_path / "o").exists()


def test_bad_arguments(tiny_model, tmp_path, capsys):
    code, _, err = ctd(["infer", tiny_model, tmp_path / "missing.png"], capsys)
    assert code == 2 and "input not found" in err
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = ctd(["infer", tiny_model, tmp_path / "notes.txt"], capsys)
    assert code == 2 and "not an image" in err
    code, _, err = ctd(["infer", tiny_model, tmp_path, "--box", "1,2,3"], capsys)
    assert code == 2 and "--box" in err
    code, _, err = ctd(["infer", tiny_model], capsys)
    assert code == 2 and "--watch" in err


def test_capture_names_are_unique_and_hidden_files_skipped(tmp_path):
    for sub in ("a", "b"):
        blob_png(tmp_path / sub / "x.png", 1)
    blob_png(tmp_path / ".hidden" / "y.png", 1)
    (tmp_path / "a" / "x.png.ctd.png").write_bytes(b"")  # ctd's own output
    caps = find_captures([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path])
    assert [c.name for c in caps] == ["x.png", "x.png-2", "a__x.png", "b__x.png"]
    shutil.rmtree(tmp_path / "b")


def test_texture_not_matching_its_mesh_is_flagged_not_measured(tiny_model, tmp_path, capsys):
    # the UVs cover only the top-right corner of the texture: the blobs lie in no UV triangle
    plane_capture(tmp_path / "cap", 4, uv_box=(0.8, 0.8, 1.0, 1.0))
    code, _, _ = ctd(["infer", tiny_model, tmp_path / "cap", "--out", tmp_path / "o"], capsys)
    assert code == 0
    (r,), _ = _rows(tmp_path / "o")
    assert r["status"] == "ok" and r["pfl_3d_mm"] is None and r["pfl_px"] > 0
    codes = {f["code"] for f in r["flags"]}
    assert {"outside_uv", "pfl_implausible"} <= codes
    assert all(lm["x3d"] is None for lm in r["landmarks"])


def test_no_face_is_a_result_not_a_failure(tiny_model, tmp_path, capsys):
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "noise.png"), noise)
    code, stdout, _ = ctd(["infer", tiny_model, tmp_path / "noise.png", "--out", tmp_path / "o"], capsys)
    assert code == 0 and "1 without a face found" in stdout
    (r,), (row,) = _rows(tmp_path / "o")
    assert r["status"] == "no_face" and r["reason"] and r["landmarks"] == [] and r["pfl_px"] is None
    assert row["status"] == "no_face" and row["pfl_px"] == "" and row["p0_x"] == ""
    assert (tmp_path / "o" / "overlays" / "noise.png.png").is_file()
