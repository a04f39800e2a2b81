"""`ctd demo` (ctd_train.demo): its settings and output folder, the data checks of --data, the
held-out links, PFL errors against the truth, the summary, and the whole pipeline end to end
with --fast (slow)."""

from __future__ import annotations

import dataclasses

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ctd_runtime.annotations import read_annotations
from ctd_runtime.errors import CtdError
from ctd_runtime.pfl import sidecar_path
from ctd_runtime.results import CaptureResult
from ctd_train.demo import data as demo_data
from ctd_train.demo import steps
from ctd_train.demo.config import CONFIG_FILE, DemoConfig, prepare_out
from ctd_train.demo.summary import DemoSummary, role_of, summary_numbers, written_files
from ctd_train.demo.truth import pfl_errors, true_pfl_px
from ctd_train.synthetic import generate, true_pfl_3d
from ctd_train.synthetic import face3d

from tests._cli import run_ctd
from tests.train._data_synth import make_folder


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 subjects x 2 images with one OBJ capture (the generator the demo uses)."""
    return generate(tmp_path_factory.mktemp("demo-synth") / "d", n_subjects=3, images_per_subject=2, seed=5,
                    size=(320, 240), n_captures=1)


# ------------------------------------------------------------------------------------------ config


def test_budgets_default_and_fast() -> None:
    full, fast = DemoConfig.for_budget(False), DemoConfig.for_budget(True)
    assert full.out == "runs/demo" and fast.out == "runs/demo-fast" and fast.fast and not full.fast
    assert fast.epochs < full.epochs
    assert fast.subjects * fast.images_per_subject < full.subjects * full.images_per_subject
    assert DemoConfig.for_budget(True, out="x", epochs=3).epochs == 3
    assert full.methods == ("ft", "ctd-ed")


def test_config_round_trip_and_checks(tmp_path: Path) -> None:
    c = DemoConfig.for_budget(True, out=str(tmp_path / "o")).resolved()
    assert DemoConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(CtdError, match="unknown key 'epoch'"):
        DemoConfig.from_dict({"epoch": 3})
    for bad, message in (({"subjects": 2}, "at least 3"), ({"epochs": 0}, "epochs must be a positive"),
                         ({"heldout_captures": 9}, "heldout_captures"), ({"threads": 0}, "threads")):
        with pytest.raises(CtdError, match=message):
            DemoConfig.for_budget(True, **bad).check()


def test_output_folder_resumes_only_the_same_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    config = DemoConfig.for_budget(True, out=str(out)).resolved()
    path = prepare_out(config)
    assert path == out / CONFIG_FILE and DemoConfig.from_dict(json.loads(path.read_text())) == config
    prepare_out(DemoConfig.for_budget(True, out=str(out), threads=1).resolved())  # speed only: resumes
    with pytest.raises(CtdError, match=r"other settings \(epochs: 1 != 4") as e:
        prepare_out(DemoConfig.for_budget(True, out=str(out), epochs=4).resolved())
    assert str(out / CONFIG_FILE) in str(e.value)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CtdError, match="not empty and holds no demo_config.json"):
        prepare_out(DemoConfig.for_budget(True, out=str(other)).resolved())
    (tmp_path / "file").write_text("x")
    with pytest.raises(CtdError, match="not a folder"):
        prepare_out(DemoConfig.for_budget(True, out=str(tmp_path / "file")).resolved())


# ------------------------------------------------------------------------------------------ data


def test_synthetic_sets_are_cached_and_held_out_identities_differ(tmp_path: Path) -> None:
    config = DemoConfig.for_budget(True, subjects=3, images_per_subject=2, heldout_subjects=2, heldout_captures=1)
    d = demo_data.synthetic_data(config, cache_dir=tmp_path)
    again = demo_data.synthetic_data(config, cache_dir=tmp_path)
    assert again.train == d.train and again.heldout == d.heldout and d.train != d.heldout
    assert len(read_annotations(d.train, validate_images=False)) == 6 and not (d.train / "captures").exists()
    held = read_annotations(d.heldout, validate_images=False)
    assert len(held) == 4 and not np.allclose(held.points[0], read_annotations(d.train, False).points[0])
    assert [p.name for p in d.captures] == ["000-1.obj"] and d.schema == "imm14" and d.synthetic
    obj = str(d.captures[0].resolve())
    assert d.capture_images == {obj: "000-1.jpg"} and 20 < d.captures_truth[obj] < 40


def test_captures_truth_is_the_generators_3d_pfl(synthetic: Path) -> None:
    truth_3d, images = demo_data.captures_truth(synthetic)
    ident = face3d.sample_identity(np.random.default_rng([5, 0]))
    obj = str((synthetic / "captures" / "000-1.obj").resolve())
    assert truth_3d == {obj: pytest.approx(true_pfl_3d(ident)[0])} and images == {obj: "000-1.jpg"}
    assert demo_data.captures_truth(synthetic / "images") == ({}, {})


def test_user_data_is_checked_naming_the_file(tmp_path: Path) -> None:
    good, _ = make_folder(tmp_path / "good", n_images=6, n_subjects=3)
    d = demo_data.user_data(good)
    assert d.schema == "imm14" and not d.synthetic and d.num_subjects == 3 and d.captures == [] and d.heldout is None
    with pytest.raises(CtdError, match="--data folder not found") as e:
        demo_data.user_data(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(e.value)
    few, _ = make_folder(tmp_path / "few", n_images=4, n_subjects=2)
    with pytest.raises(CtdError, match="too few") as e:
        demo_data.user_data(few)
    assert str(few / "annotations.csv") in str(e.value)
    odd, _ = make_folder(tmp_path / "odd", n_images=6, n_subjects=3, points=np.full((6, 5, 2), 20.0))
    with pytest.raises(CtdError, match="5 points per image: no built-in schema") as e:
        demo_data.user_data(odd)
    assert str(odd / "annotations.csv") in str(e.value)
    broken, _ = make_folder(tmp_path / "broken", n_images=6, n_subjects=3)
    (broken / "images" / "00-0.png").write_bytes(b"not a png")
    with pytest.raises(CtdError, match="00-0.png"):
        demo_data.user_data(broken)


def test_user_data_finds_obj_captures(synthetic: Path) -> None:
    d = demo_data.user_data(synthetic)
    assert [p.name for p in d.captures] == ["000-1.obj"] and d.captures_root == synthetic
    assert list(d.captures_truth) == [str(d.captures[0].resolve())]


def test_bad_data_exits_2_naming_the_file_and_writes_nothing(tmp_path: Path, capsys) -> None:
    bad, _ = make_folder(tmp_path / "bad", n_images=6, n_subjects=3)
    csv = bad / "annotations.csv"
    csv.write_text(csv.read_text().replace(csv.read_text().splitlines()[2].split(",")[3], "oops", 1))
    code, _, err = run_ctd(["demo", "--fast", "--data", bad, "--out", tmp_path / "out"], capsys, fold_stderr=True)
    assert code == 2 and str(csv) in err and "row" in err
    assert not (tmp_path / "out").exists()


def test_heldout_links_the_test_split_with_its_sidecars(synthetic: Path, tmp_path: Path) -> None:
    d = demo_data.user_data(synthetic)
    held = demo_data.link_heldout(d, ["001-5.jpg", "002-1.jpg"], tmp_path)
    images = read_annotations(held, validate_images=True)
    source = read_annotations(synthetic, validate_images=False)
    assert images.image_names == ["001-5.jpg", "002-1.jpg"] and images.subjects == ["001", "002"]
    np.testing.assert_allclose(images.points, source.points[[3, 4]], atol=1e-4)
    assert all(sidecar_path(p).is_file() for p in images.image_paths)
    assert demo_data.link_heldout(d, ["001-5.jpg"], tmp_path) == held  # again: replaced, not refused
    with pytest.raises(CtdError, match="lacks: 999.jpg"):
        demo_data.link_heldout(d, ["999.jpg"], tmp_path)


# ------------------------------------------------------------------------------------------ truth


def _result(path: Path, status: str = "ok", **kw) -> CaptureResult:
    return CaptureResult(input=str(path), name=path.name, kind="mesh" if path.suffix == ".obj" else "image",
                         status=status, **kw)


def test_true_pfl_px_matches_the_generators_metadata(synthetic: Path) -> None:
    import csv

    truth = true_pfl_px(read_annotations(synthetic, validate_images=False), "imm14")
    rows = list(csv.DictReader((synthetic / "metadata.csv").read_text().splitlines()))
    for row in rows:
        assert truth[str((synthetic / "images" / row["image"]).resolve())] == pytest.approx(float(row["pfl_px"]),
                                                                                            abs=2e-4)


def test_pfl_errors_against_known_truth(tmp_path: Path) -> None:
    a, b, c, obj = (tmp_path / n for n in ("a.jpg", "b.jpg", "c.jpg", "m.obj"))
    truth_px = {str(a.resolve()): 40.0, str(b.resolve()): 50.0, str(c.resolve()): 45.0}
    results = [
        _result(a, pfl_px=42.0, spacing_mm=0.5, pfl_mm=21.0),   # 2 px, 1 mm off
        _result(b, pfl_px=46.0),                                # 4 px off, no spacing
        _result(c, status="no_face", reason="no face"),         # not in the means
        _result(obj, pfl_px=41.0, pfl_3d_mm=29.0),              # 3D: 1 mm off; 2D through its texture: 1 px off
        _result(tmp_path / "x.jpg", status="error", error="bad"),
    ]
    e = pfl_errors(results, truth_px, {str(obj.resolve()): 30.0}, {str(obj.resolve()): 40.0})
    assert (e.captures, e.measured, e.not_found, e.failed) == (5, 3, 1, 1)
    assert e.px == pytest.approx((2 + 4 + 1) / 3) and e.px_n == 3 and e.true_px == pytest.approx(130 / 3)
    assert e.mm == pytest.approx(1.0) and e.mm_n == 1 and e.true_mm == pytest.approx(20.0)
    assert e.mm_3d == pytest.approx(1.0) and e.mm_3d_n == 1 and e.true_mm_3d == pytest.approx(30.0)
    empty = pfl_errors([results[2]], truth_px, {})
    assert empty.px is None and empty.px_n == 0 and empty.mm_3d is None


# ------------------------------------------------------------------------------------------ steps


def test_methods_follow_the_recipe_and_the_accuracy_study(tmp_path: Path) -> None:
    config = DemoConfig.for_budget(False, out=str(tmp_path / "o"), epochs=3)
    ft = steps.train_config(config, tmp_path, "imm14", "ft")
    ed = steps.train_config(config, tmp_path, "imm14", "ctd-ed")
    from ctd_train.config import TrainConfig

    recipe = TrainConfig(data="d", out="o")
    assert ft.teacher == ed.teacher == "dlib-resnet29" and ft.epochs == ed.epochs == 3
    assert dataclasses.replace(ft.method, head=recipe.method.head) == recipe.method and ft.method.head == "simple"
    assert (ft.decode, ft.sigma, ft.batch_size) == (recipe.decode, 1.5, 2)
    assert (ft.lr, ft.head_lr_scale) == (ed.lr, ed.head_lr_scale) == (1e-5, 10.0)  # dlib's encoder needs the low lr
    assert (ft.crop, ft.margin, ft.augment.scale_max, ft.augment.shift) == ("schema", 1.2, 3.0, 0.1)  # the station's
    assert ft.augment.rotation_deg == recipe.augment.rotation_deg and ed.augment == ft.augment
    assert (ed.method.name, ed.method.lambda_, ed.method.loss_reduction, ed.method.ed_features) == (
        "ctd-ed", 2e-4, "simplebaseline", "pooled")
    assert Path(ed.out) == tmp_path / "o" / "runs" / "ctd-ed"


def test_the_model_to_export_is_chosen_on_validation(tmp_path: Path) -> None:
    for name, values in (("ft", [0.5, 0.2, 0.3]), ("ctd-ed", [0.4, 0.25])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps({"val_me_pfl": v}) + "\n" for v in values))
    runs = {m: tmp_path / m for m in ("ft", "ctd-ed")}
    assert steps.best_validation(runs["ft"]) == 0.2 and steps.choose(runs) == "ft"
    (tmp_path / "ft" / "metrics.jsonl").write_text("")
    with pytest.raises(CtdError, match="no validated epoch"):
        steps.best_validation(runs["ft"])
    with pytest.raises(CtdError, match="metrics.jsonl"):
        steps.best_validation(tmp_path / "absent")


# ------------------------------------------------------------------------------------------ summary


def test_file_roles_and_listing(tmp_path: Path) -> None:
    assert "parity-gated" in role_of("export/model.onnx") and "INT8" in role_of("export/model.int8.onnx")
    assert "CED" in role_of("compare/compare_ced.png") and "resolved TrainConfig" in role_of("runs/ft/config.json")
    assert role_of("somewhere/else.txt") == ""
    for rel in ("demo_config.json", "infer/overlays/a.png", "infer/overlays/b.png", "runs/ft/ced.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    rows = {r["path"]: r for r in written_files(tmp_path)}
    assert set(rows) == {"demo_config.json", "demo_summary.json", "infer/overlays/", "runs/ft/ced.png"}
    assert rows["infer/overlays/"]["count"] == "2" and "overlays" in rows["infer/overlays/"]["what"]


def test_summary_numbers_name_every_step() -> None:
    s = DemoSummary(out="o", data={}, chosen="ft", seconds={"train": 12.0, "total": 30.0})
    s.methods["ft"] = {"test": {"me": 0.08, "sd": 0.02, "fr": 0.25, "auc": 0.3, "n_images": 24}}
    s.export = {"parity_max_px": 3e-5, "parity_crops": 12, "parity_tolerance_px": 0.1, "parity_passed": True,
                "int8_mean_px": 0.2, "int8_max_px": 1.5}
    s.infer = {"captures": 3, "measured": 2, "not_found": 1, "failed": 0, "px": 1.5, "true_px": 45.0, "px_n": 2,
               "mm": 0.8, "true_mm": 30.0, "mm_n": 2, "mm_3d": 0.5, "true_mm_3d": 31.0, "mm_3d_n": 1}
    s.bench = {"end_to_end_p50_ms": {"onnxruntime fp32": 80.0}}
    text = "\n".join(f"{k}: {v}" for k, v in summary_numbers(s))
    for part in ("0.0800 +- 0.0200, 25.0%, 0.300 (24 images)", "passed", "mean 0.2 px", "2/3 (no face: 1",
                 "1.50 px of 45.0 px", "0.80 mm of 30.0 mm", "3D mm: 0.50 mm of 31.0 mm (1 captures)",
                 "80.0 ms", "train 12 s, total 30 s"):
        assert part in text, part


def test_demo_is_a_registered_command(capsys) -> None:
    code, out, _ = run_ctd(["--help"], capsys)
    assert code == 0 and "demo" in out
    code, out, _ = run_ctd(["demo", "--help"], capsys)
    assert code == 0 and "--fast" in out and "--data" in out


# ------------------------------------------------------------------------------------------ end to end


def _finite_numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _finite_numbers(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _finite_numbers(x)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


@pytest.mark.slow
def test_fast_demo_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CTD_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    code, stdout, err = run_ctd(["demo", "--fast", "--out", out], capsys)
    assert code == 0, err
    for step in ("1/7 data", "2/7 train", "3/7 compare", "4/7 export", "5/7 infer", "6/7 bench", "7/7 summary"):
        assert step in stdout
    s = json.loads((out / "demo_summary.json").read_text())
    numbers = _finite_numbers({k: s[k] for k in ("methods", "export", "bench", "seconds")})
    assert numbers and all(math.isfinite(v) for v in numbers)
    assert s["export"]["parity_passed"] is True and s["export"]["parity_max_px"] < 0.1
    for rel in ("demo_config.json", "export/model.onnx", "export/model.int8.onnx", "compare/compare.md",
                "compare/compare_ced.png", "infer/results.jsonl", "infer/results.csv", "bench/bench.json",
                "runs/ft/checkpoint_best.pt", "runs/ctd-ed/checkpoint_best.pt"):
        assert (out / rel).is_file(), rel
    lines = [json.loads(x) for x in (out / "infer" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == s["infer"]["captures"] == 2 * 3 + 1
    assert {x["kind"] for x in lines} == {"image", "mesh"} and all(x["status"] in ("ok", "no_face") for x in lines)
    assert all("pfl_px" in x and "pfl_mm" in x and "pfl_3d_mm" in x for x in lines)
    for x in lines:   # a measured capture has its PFL; one without a face says why
        assert (x["pfl_px"] is not None and math.isfinite(x["pfl_px"])) if x["status"] == "ok" else x["reason"]
    listed = {r["path"] for r in s["files"]}
    assert {"export/model.onnx", "demo_summary.json", "bench/bench.json"} <= listed
    # a rerun resumes: the trainings are finished, the export is kept, the summary is the same
    first = {m: v["test"] for m, v in s["methods"].items()}
    code, stdout, err = run_ctd(["demo", "--fast", "--out", out], capsys)
    assert code == 0, err
    again = json.loads((out / "demo_summary.json").read_text())
    assert {m: v["test"] for m, v in again["methods"].items()} == first
    assert "already written by the previous export" in stdout


@pytest.mark.parametrize("blocked", [("torch", "onnx"), ("torch", "onnx", "ctd_train", "ctd_export")],
                         ids=["no-torch", "no-training-packages"])
def test_a_station_lists_demo_and_says_what_to_install(blocked, tmp_path: Path) -> None:
    from tests.runtime.test_no_torch import _ctd

    proc = _ctd(["--help"], blocked)
    assert proc.returncode == 0 and "demo" in proc.stdout, proc.stderr
    proc = _ctd(["demo", "--fast", "--out", str(tmp_path / "o")], blocked, cwd=tmp_path)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "needs the training stack" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
