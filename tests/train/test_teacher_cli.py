"""`ctd teacher list` / `ctd teacher check`, the teacher entries behind them and the golden
comparison behind `--golden` (real teachers from ../shared/teachers where present; a tiny teacher
with a golden spec of its own everywhere)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ctd_runtime.cli import build_app, main
from ctd_runtime.errors import CtdError
from ctd_train.teachers import list_teachers, teacher_entry
from ctd_train.teachers._registry import _REGISTRY, TeacherEntry, register_teacher
from ctd_train.teachers.golden import GoldenOutput, compare_golden
from tests.train._tiny_training import TINY, tiny_teachers

GOLDEN_TEACHERS = sorted(e.name for e in list_teachers() if e.golden)
TINY_GOLDEN = "tiny-golden"


def _run(args: list[str]):
    return CliRunner().invoke(build_app(), args)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _perturbed_copy(src, dest, key: str, by: float):
    """`src` golden.npz with one value of `key` moved by `by`, written to `dest` (tmp_path only:
    the golden inputs are real faces and never go inside the repository)."""
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    data[key] = data[key].copy()
    flat = data[key].reshape(-1)
    flat[flat.size // 2] += np.asarray(by, dtype=data[key].dtype)
    np.savez(dest, **data)
    return dest


# ---------------------------------------------------------------------------- the entries


def test_every_teacher_module_declares_one_registered_entry():
    import importlib
    import pkgutil

    from ctd_train import teachers

    declared = {}
    for info in pkgutil.iter_modules(teachers.__path__):
        module = importlib.import_module(f"ctd_train.teachers.{info.name}")
        if isinstance(getattr(module, "TEACHER", None), TeacherEntry):
            declared[module.TEACHER.name] = module.TEACHER
    assert set(declared) == {"dlib-resnet29", "hse-mobilenet-vggface2", "resnet50-vggface2"}
    for name, entry in declared.items():
        assert teacher_entry(name) is entry
        assert entry.description and entry.licence and entry.weights_source
        skeleton = entry.skeleton()
        assert skeleton.name == name and skeleton.has_classifier == entry.has_classifier
        assert skeleton.weights_path is None


def _loader_of_another_module(weights):
    raise AssertionError("never called")


def test_a_teacher_is_registered_once():
    entry = teacher_entry("dlib-resnet29")
    other = replace(entry, loader=_loader_of_another_module)
    with pytest.raises(ValueError, match="registered twice"):
        register_teacher(other)
    assert _REGISTRY["dlib-resnet29"] is entry


def test_weights_found_uses_the_entry_finder(tmp_path, monkeypatch):
    entry = teacher_entry("resnet50-vggface2")
    monkeypatch.delenv("CTD_VGGFACE2_WEIGHTS", raising=False)
    assert entry.weights_found() == (False, "not found")
    pkl = tmp_path / "resnet50_ft_weight.pkl"
    monkeypatch.setenv("CTD_VGGFACE2_WEIGHTS", str(pkl))
    found, where = entry.weights_found()
    assert not found and str(pkl) in where  # named but absent
    pkl.write_bytes(b"")
    assert entry.weights_found() == (True, str(pkl))


# ---------------------------------------------------------------------------- ctd teacher list


def test_list_prints_every_teacher(monkeypatch):
    monkeypatch.delenv("CTD_VGGFACE2_WEIGHTS", raising=False)
    r = _run(["teacher", "list"])
    assert r.exit_code == 0, r.output
    entries = list_teachers()
    assert len(entries) >= 3
    for e in entries:
        assert e.name in r.output
    for word in ("CC0-1.0", "VGGFace2 terms", "not found", "found here", "description"):
        assert word in r.output


def test_list_shows_found_weights(monkeypatch, tmp_path):
    p = tmp_path / "resnet50_ft_weight.pkl"
    p.write_bytes(b"")
    monkeypatch.setenv("CTD_VGGFACE2_WEIGHTS", str(p))
    r = _run(["teacher", "list"])
    assert r.exit_code == 0, r.output
    assert "yes: " in r.output and "resnet50_ft_weight.pkl" in r.output.replace("\n", "")


# ---------------------------------------------------------------------------- ctd teacher check


def test_unknown_teacher_lists_known(capsys):
    with pytest.raises(SystemExit) as e:
        main(["teacher", "check", "resnet-9000"])
    assert e.value.code == 2
    err = _flat(capsys.readouterr().err)
    assert "unknown teacher 'resnet-9000'" in err
    for name in ("dlib-resnet29", "hse-mobilenet-vggface2", "resnet50-vggface2"):
        assert name in err


def test_vggface2_without_weights_explains(capsys, monkeypatch):
    monkeypatch.delenv("CTD_VGGFACE2_WEIGHTS", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["teacher", "check", "resnet50-vggface2"])
    assert e.value.code == 2
    err = _flat(capsys.readouterr().err)
    assert "not redistributable" in err and "--teacher-weights" in err


@pytest.fixture()
def tiny_golden(monkeypatch, tmp_path):
    """A tiny teacher whose entry has two golden outputs, and a golden.npz of its own outputs."""
    tiny_teachers(monkeypatch)
    base = _REGISTRY[TINY]

    def load(weights):
        teacher = base.loader(weights)
        teacher.name = TINY_GOLDEN
        return teacher

    specs = (
        GoldenOutput("pooled", 1e-5, lambda n, o, x: o["features"].mean(dim=(2, 3)), "pooled features"),
        GoldenOutput("logits", 1e-4, lambda n, o, x: o["logits"], "classifier logits"),
    )
    monkeypatch.setitem(_REGISTRY, TINY_GOLDEN, replace(base, name=TINY_GOLDEN, loader=load, golden=specs))
    teacher = load(None)
    rgb = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(teacher.input_spec.normalization.apply(np.ascontiguousarray(rgb[..., ::-1])))
    with torch.no_grad():
        out = teacher.frozen()(x)
    path = tmp_path / "golden.npz"
    np.savez(path, inputs=rgb, pooled=out["features"].mean(dim=(2, 3)).numpy(), logits=out["logits"].numpy())
    return teacher, path


def test_compare_golden_on_the_tiny_teacher(tiny_golden, tmp_path):
    teacher, path = tiny_golden
    results = compare_golden(teacher, path)
    assert [r.name for r in results] == ["pooled", "logits"]
    assert all(r.ok and r.max_abs_diff < 1e-6 for r in results)
    bad = _perturbed_copy(path, tmp_path / "bad.npz", "logits", 1e-3)
    results = compare_golden(teacher, bad)
    assert [r.ok for r in results] == [True, False]
    assert results[1].max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_check_prints_counts_shapes_and_golden_verdict(tiny_golden, tmp_path):
    teacher, path = tiny_golden
    # conv 3->8 k4 (392) + conv 8->16 k4 (2064) = encoder 2456; linear 16->5 (85)
    assert (teacher.parameter_count(), teacher.encoder_parameter_count()) == (2541, 2456)
    d = teacher.describe(128)
    assert d["feature_map"] == [1, 16, 4, 4] and d["logits"] == [1, 5] and d["input_size"] == 64
    r = _run(["teacher", "check", TINY_GOLDEN, "--size", "128", "--golden", str(path)])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in r.output.splitlines() if line.count("│") == 3}
    assert rows["parameters"] == "2,541 (encoder 2,456)"
    assert rows["feature map at 128x128"] == "[1, 16, 4, 4]" and rows["classifier"] == "yes, logits [1, 5]"
    assert "golden check passed (2 outputs)" in _flat(r.output) and "FAIL" not in r.output


def test_check_exits_1_when_a_golden_output_is_perturbed(tiny_golden, tmp_path):
    _, path = tiny_golden
    bad = _perturbed_copy(path, tmp_path / "bad.npz", "pooled", 1e-4)
    r = _run(["teacher", "check", TINY_GOLDEN, "--golden", str(bad)])
    assert r.exit_code == 1, r.output
    assert r.output.count("FAIL") == 1
    assert "golden check failed for 1 output(s): pooled" in _flat(r.output)


def test_compare_golden_unknown_teacher_and_missing_file(tmp_path):
    from ctd_train.teachers import vggface2_resnet
    from ctd_train.teachers._base import Teacher

    with pytest.raises(CtdError, match="no golden reference.*dlib-resnet29, hse-mobilenet-vggface2"):
        compare_golden(vggface2_resnet.random_teacher(), tmp_path / "golden.npz")
    t = vggface2_resnet.random_teacher()
    fake = Teacher("dlib-resnet29", t.input_spec, t.network)
    with pytest.raises(CtdError, match="golden file not found"):
        compare_golden(fake, tmp_path / "golden.npz")


# ---------------------------------------------------------------------------- the real teachers


@pytest.mark.shared
@pytest.mark.parametrize("name", GOLDEN_TEACHERS)
def test_golden_file_of_every_entry_matches_its_loader(teachers_dir, name):
    from ctd_train.teachers import create_teacher

    golden = teachers_dir / name / "golden.npz"
    assert golden.is_file(), f"teacher {name} declares golden outputs; {golden} is missing"
    results = compare_golden(create_teacher(name, teachers_dir / name), golden)
    assert [r.name for r in results] == [s.key for s in teacher_entry(name).golden]
    assert all(r.ok for r in results), [r for r in results if not r.ok]


@pytest.mark.shared
@pytest.mark.parametrize("name", GOLDEN_TEACHERS)
def test_check_golden_passes_and_fails_when_perturbed(teachers_dir, tmp_path, name):
    golden = teachers_dir / name / "golden.npz"
    r = _run(["teacher", "check", name, "--weights", str(teachers_dir / name), "--golden", str(golden)])
    assert r.exit_code == 0, r.output
    assert "golden check passed" in r.output and "feature map at 256x256" in r.output
    assert "FAIL" not in r.output

    spec = teacher_entry(name).golden[-1]
    bad = _perturbed_copy(golden, tmp_path / "golden_perturbed.npz", spec.key, 10 * spec.tolerance)
    r = _run(["teacher", "check", name, "--weights", str(teachers_dir / name), "--golden", str(bad)])
    assert r.exit_code == 1, r.output
    assert r.output.count("FAIL") == 1 and "golden check failed" in r.output and spec.key in r.output


@pytest.mark.shared
def test_golden_file_of_another_teacher_is_refused(teachers_dir):
    from ctd_train.teachers import create_teacher

    t = create_teacher("dlib-resnet29", teachers_dir / "dlib-resnet29")
    other = teachers_dir / "hse-mobilenet-vggface2" / "golden.npz"
    with pytest.raises(CtdError, match="lacks 'descriptors'") as e:
        compare_golden(t, other)
    assert str(other) in str(e.value)
