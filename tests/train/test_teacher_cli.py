"""`ctd teacher list` / `ctd teacher check` and the golden comparison behind `--golden`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from ctd_runtime.cli import build_app, main
from ctd_runtime.errors import CtdError

DLIB_DAT = "dlib-resnet29/dlib_face_recognition_resnet_model_v1.dat"
DLIB_GOLDEN = "dlib-resnet29/golden.npz"
HSE_JSON = "hse-mobilenet-vggface2/faceres-deep.json"
HSE_GOLDEN = "hse-mobilenet-vggface2/golden.npz"

CASES = {
    "dlib-resnet29": (DLIB_DAT, DLIB_GOLDEN, "descriptors"),
    "hse-mobilenet-vggface2": (HSE_JSON, HSE_GOLDEN, "age_pred/BiasAdd:0"),
}


def _run(args: list[str]):
    return CliRunner().invoke(build_app(), args)


def test_runtime_cli_does_not_import_torch():
    code = ("import sys, ctd_runtime.cli as c, ctd_runtime.cli.teacher; c.build_app(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_list(monkeypatch):
    monkeypatch.delenv("CTD_VGGFACE2_WEIGHTS", raising=False)
    r = _run(["teacher", "list"])
    assert r.exit_code == 0, r.output
    for name in ("dlib-resnet29", "hse-mobilenet-vggface2", "resnet50-vggface2"):
        assert name in r.output
    for word in ("CC0-1.0", "VGGFace2 terms", "not found", "found here"):
        assert word in r.output


def test_list_shows_found_weights(monkeypatch, tmp_path):
    p = tmp_path / "resnet50_ft_weight.pkl"
    p.write_bytes(b"")
    monkeypatch.setenv("CTD_VGGFACE2_WEIGHTS", str(p))
    r = _run(["teacher", "list"])
    assert r.exit_code == 0, r.output
    assert "yes: " in r.output and "resnet50_ft_weight.pkl" in r.output.replace("\n", "")


def test_unknown_teacher_lists_known(capsys):
    with pytest.raises(SystemExit) as e:
        main(["teacher", "check", "resnet-9000"])
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown teacher 'resnet-9000'" in err
    for name in ("dlib-resnet29", "hse-mobilenet-vggface2", "resnet50-vggface2"):
        assert name in err


def test_vggface2_without_weights_explains(capsys, monkeypatch):
    monkeypatch.delenv("CTD_VGGFACE2_WEIGHTS", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["teacher", "check", "resnet50-vggface2"])
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not redistributable" in err and "--teacher-weights" in err


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(CASES))
def test_check_golden_passes(teachers_dir, name):
    weights, golden, _ = CASES[name]
    r = _run(["teacher", "check", name, "--weights", str(teachers_dir / weights),
              "--golden", str(teachers_dir / golden)])
    assert r.exit_code == 0, r.output
    assert "golden check passed" in r.output
    assert "feature map at 256x256" in r.output
    assert "FAIL" not in r.output


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(CASES))
def test_check_perturbed_golden_fails(teachers_dir, tmp_path, name):
    weights, golden, key = CASES[name]
    with np.load(teachers_dir / golden) as z:
        data = {k: z[k] for k in z.files}
    data[key] = data[key].copy()
    data[key][3, 5] += np.float32(1e-3)  # one value, just above every tolerance
    bad = tmp_path / "golden_perturbed.npz"  # in tmp_path only: never inside the repository
    np.savez(bad, **data)
    r = _run(["teacher", "check", name, "--weights", str(teachers_dir / weights), "--golden", str(bad)])
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output and "golden check failed" in r.output and key in r.output


@pytest.mark.shared
def test_compare_golden_function(teachers_dir):
    from ctd_train.teachers import create_teacher
    from ctd_train.teachers.golden import GoldenCheck, compare_golden

    t = create_teacher("dlib-resnet29", teachers_dir / DLIB_DAT)
    res = compare_golden(t, teachers_dir / DLIB_GOLDEN)
    assert [r.name for r in res] == ["descriptors", "pooled"]
    assert all(isinstance(r, GoldenCheck) and len(r) == 4 for r in res)
    (name, diff, tol, ok) = res[0]
    assert (name, tol, ok) == ("descriptors", 1e-5, True) and 0 <= diff < 1e-5
    assert res[1].tolerance == 2e-5 and res[1].ok
    # the golden file of another teacher is refused, naming the file
    with pytest.raises(CtdError, match="lacks 'descriptors'") as e:
        compare_golden(t, teachers_dir / HSE_GOLDEN)
    assert str(teachers_dir / HSE_GOLDEN) in str(e.value)


def test_compare_golden_unknown_teacher_and_missing_file(tmp_path):
    from ctd_train.teachers import vggface2_resnet
    from ctd_train.teachers.golden import GOLDEN_OUTPUTS, compare_golden

    assert {k: [(s.key, s.tolerance) for s in v] for k, v in GOLDEN_OUTPUTS.items()} == {
        "dlib-resnet29": [("descriptors", 1e-5), ("pooled", 2e-5)],
        "hse-mobilenet-vggface2": [
            ("graph_input", 1e-4), ("conv_pw_13_relu/clip_by_value:0", 2e-4), ("global_pooling/Mean:0", 5e-5),
            ("feats/Relu:0", 1e-4), ("age_pred/BiasAdd:0", 2e-4), ("age_pred/Softmax:0", 1e-5),
            ("gender_pred/BiasAdd:0", 2e-4), ("gender_pred/Sigmoid:0", 1e-5),
        ],
    }
    with pytest.raises(CtdError, match="no golden reference"):
        compare_golden(vggface2_resnet.random_teacher(), tmp_path / "golden.npz")
    from ctd_train.teachers._base import Teacher

    t = vggface2_resnet.random_teacher()
    fake = Teacher("dlib-resnet29", t.input_spec, t.network)
    with pytest.raises(CtdError, match="golden file not found"):
        compare_golden(fake, tmp_path / "golden.npz")
