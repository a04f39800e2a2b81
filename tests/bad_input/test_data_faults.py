"""Bad data never accepted silently: a broken image in a folder, a broken annotation file, a
folder of the wrong point count, a broken import. Each command exits 2 with a message naming the
file and the fault, and leaves nothing behind (no run, output or temporary)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input._corpus import IMAGE_FAULTS, ctd, snapshot, temporaries
from tests.bad_input.conftest import TRAIN_ARGS
from tests.train._data_synth import face58, make_folder

BAD_IMAGE = "01-1"  # the folder's second image (subject 01), row 3 of annotations.csv


def _folder_with(tmp_path: Path, fault: str) -> tuple[Path, Path]:
    ext, breaks, _ = IMAGE_FAULTS[fault]
    root, _ = make_folder(tmp_path / "data", n_images=8, n_subjects=4, ext=ext)
    image = root / "images" / f"{BAD_IMAGE}{ext}"
    breaks(image)
    return root, image


def _commands(kind: str, data: Path, out: Path, run: Path | None) -> list:
    if kind == "train":
        return ["train", "--data", data, "--out", out, *TRAIN_ARGS]
    if kind == "data show":
        return ["data", "show", data, "--out", out, "--n", "8"]
    if kind == "evaluate":
        return ["evaluate", run, "--data", data, "--out", out]
    return ["export", run, "--out", out, "--images", data, "--max-images", "16", "--precision", "fp32"]


@pytest.mark.parametrize("fault", list(IMAGE_FAULTS))
@pytest.mark.parametrize("command", ["train", "data show", "evaluate", "export"])
def test_a_broken_image(fault, command, tmp_path, capsys, tiny, trained_run):
    data, image = _folder_with(tmp_path, fault)
    before = snapshot(trained_run)
    out = tmp_path / "out"
    code, _, err = ctd(_commands(command, data, out, trained_run), capsys)
    assert code == 2, err
    assert str(image) in err and IMAGE_FAULTS[fault][2] in err, err
    if command == "train":  # validated up front: the annotation file and row that list it
        assert f"{data / 'annotations.csv'}, row 3: image {image}: " in err
    assert not out.exists(), "a refused command writes nothing"
    assert snapshot(trained_run) == before and not temporaries(tmp_path)


def _csv(root: Path) -> Path:
    return root / "annotations.csv"


def _edit_csv(root: Path, edit) -> None:
    lines = _csv(root).read_text().splitlines()
    _csv(root).write_text("\n".join(edit(lines)) + "\n")


def _drop_columns(lines: list[str], names: set[str]) -> list[str]:
    header = lines[0].split(",")
    keep = [i for i, h in enumerate(header) if h not in names]
    return [",".join(line.split(",")[i] for i in keep) for line in lines]


def _cell(lines: list[str], row: int, col: int, value: str) -> list[str]:
    cells = lines[row - 1].split(",")
    cells[col] = value
    lines[row - 1] = ",".join(cells)
    return lines


def _points(n: int):
    def make(root: Path) -> None:
        rng = np.random.default_rng(1)
        pts = np.stack([np.vstack([face58(200, 160, rng), face58(200, 160, rng)])[:n] for _ in range(8)])
        make_folder(root, n_images=8, n_subjects=4, points=pts)
    return make


# annotation faults: name -> (make the folder, extra train options, what the error says, row)
ANNOTATION_FAULTS = {
    "no subject column": (lambda r: _edit_csv(r, lambda ls: _drop_columns(ls, {"subject"})), [],
                          "header lacks column(s) subject", 1),
    "not a number": (lambda r: _edit_csv(r, lambda ls: _cell(ls, 4, 5, "oops")), [], "'oops' is not a number", 4),
    "NaN coordinate": (lambda r: _edit_csv(r, lambda ls: _cell(ls, 5, 2, "nan")), [], "(must be finite)", 5),
    "point outside its image": (lambda r: _edit_csv(r, lambda ls: _cell(ls, 6, 2, "250.0")), [],
                                "lies outside image", 6),
    "image listed twice": (lambda r: _edit_csv(r, lambda ls: ls + [ls[1]]), [], "is listed twice", 10),
    "header only": (lambda r: _edit_csv(r, lambda ls: ls[:1]), [], "no annotated images", None),
    "57 points for imm14": (_points(57), [], "has only 57 points, but schema 'imm14' is for annotations of 58", None),
    "68 points for imm14": (_points(68), [], "68 points, but schema 'imm14' is for annotations of 58 points "
                            "(num_source_points) (an iBUG/300-W folder: --schema ibug68)", None),
    "58 points for ibug68": (_points(58), ["--schema", "ibug68"],
                             "has only 58 points, but schema 'ibug68' is for annotations of 68", None),
}


@pytest.mark.parametrize("fault", list(ANNOTATION_FAULTS))
def test_a_broken_annotation_file(fault, tmp_path, capsys, tiny):
    make, extra, says, row = ANNOTATION_FAULTS[fault]
    root = tmp_path / "data"
    if fault.startswith(("57", "68", "58")):
        make(root)
    else:
        make_folder(root, n_images=8, n_subjects=4)
        make(root)
    out = tmp_path / "run"
    code, _, err = ctd(["train", "--data", root, "--out", out, *TRAIN_ARGS, *extra], capsys)
    assert code == 2 and says in err, err
    assert err.startswith(f"error: {_csv(root)}" + ("" if row is None else f", row {row}: ")), err
    assert not out.exists() and not temporaries(tmp_path)


@pytest.mark.parametrize("schema, says", [
    ("imm99", "unknown schema 'imm99'"),
    ("broken.json", "schema is not valid JSON"),
])
def test_a_bad_schema(schema, says, tmp_path, capsys, tiny):
    root, _ = make_folder(tmp_path / "data", n_images=8, n_subjects=4)
    if schema.endswith(".json"):
        (tmp_path / schema).write_text("{not json")
        schema = str(tmp_path / schema)
    code, _, err = ctd(["train", "--data", root, "--out", tmp_path / "run", *TRAIN_ARGS, "--schema", schema], capsys)
    assert code == 2 and says in err
    assert not (tmp_path / "run").exists()


def test_evaluating_a_run_on_a_folder_of_another_point_count(tmp_path, capsys, tiny, trained_run):
    _points(57)(tmp_path / "data")
    before = snapshot(trained_run)
    code, _, err = ctd(["evaluate", trained_run, "--data", tmp_path / "data", "--out", tmp_path / "o"], capsys)
    assert code == 2 and f"{tmp_path / 'data' / 'annotations.csv'}: the annotation has only 57 points" in err
    assert not (tmp_path / "o").exists() and snapshot(trained_run) == before


def test_an_ibug_import_trains_on_its_own_anatomy(tmp_path, capsys, tiny):
    """The positive side of the count check: a 68-point import with the schema import-pts names."""
    from ctd_train.config import TrainConfig
    from ctd_train.trainer import prepare
    from tests.train._tiny_training import tiny_config
    from tests.train.test_pts import _make_ibug

    for i in range(4):
        _make_ibug(tmp_path / "ibug" / f"s{i}", n_points=68, seed=i)
    code, said, _ = ctd(["data", "import-pts", tmp_path / "ibug", "--out", tmp_path / "data"], capsys)
    assert code == 0 and "train with --schema ibug68" in said
    config: TrainConfig = tiny_config(tmp_path / "data", tmp_path / "run", schema="ibug68")
    setup = prepare(config)
    assert setup.schema.name == "ibug68" and setup.schema.num_landmarks == 68
    assert not (tmp_path / "run").exists()  # prepare writes nothing


def _pts_folder(tmp_path: Path) -> Path:
    from tests.train.test_pts import _make_ibug

    root = tmp_path / "ibug"
    _make_ibug(root)
    return root


# import faults: name -> (break the folder, the file the error names, what it says)
IMPORT_FAULTS = {
    "n_points disagrees": (lambda r: (r / "a.pts").write_text((r / "a.pts").read_text().replace("n_points: 5",
                                                                                               "n_points: 6")),
                           "a.pts", "n_points says 6 but the file has 5 points"),
    "no opening brace": (lambda r: (r / "a.pts").write_text("version: 1\nn_points: 1\n1 2\n}\n"), "a.pts",
                         "expected 'key: value' or '{'"),
    "no image beside it": (lambda r: (r / "a.jpg").unlink(), "a.pts", "no image with the same name"),
    "truncated image": (lambda r: (r / "sub" / "b.png").write_bytes((r / "sub" / "b.png").read_bytes()[:-12]),
                        "sub/b.pts", "truncated PNG"),
    "point outside its image": (lambda r: (r / "sub" / "c.pts").write_text(
        "version: 1\nn_points: 5\n{\n" + "500 5\n" * 5 + "}\n"), "sub/c.pts", "lies outside its image"),
}


@pytest.mark.parametrize("fault", list(IMPORT_FAULTS))
def test_a_broken_pts_import(fault, tmp_path, capsys):
    root = _pts_folder(tmp_path)
    breaks, file, says = IMPORT_FAULTS[fault]
    breaks(root)
    out = tmp_path / "data"
    code, _, err = ctd(["data", "import-pts", root, "--out", out], capsys)
    assert code == 2 and f"{root / file}" in err and says in err, err
    assert not out.exists() and not temporaries(tmp_path)


def test_a_broken_asf_import(tmp_path, capsys):
    asf = tmp_path / "asf"
    asf.mkdir()
    (asf / "01-1m.asf").write_text("######\n# not an ASF point list\n")
    code, _, err = ctd(["data", "import-imm", asf, "--images", asf, "--out", tmp_path / "data"], capsys)
    assert code == 2 and str(asf / "01-1m.asf") in err, err
    assert not (tmp_path / "data").exists()


def test_config_of_a_broken_run_is_named(tmp_path, capsys, tiny, run_copy):
    """A run dir whose config.json is not JSON: train refuses to resume into it, naming the file."""
    (run_copy / "config.json").write_text("{ half a config")
    root, _ = make_folder(tmp_path / "data", n_images=8, n_subjects=4)
    before = snapshot(run_copy)
    code, _, err = ctd(["train", "--data", root, "--out", run_copy, *TRAIN_ARGS], capsys)
    assert code == 2 and f"{run_copy / 'config.json'}: cannot read the existing run's config" in err
    assert snapshot(run_copy) == before
    json.dumps(err)  # one printable line
