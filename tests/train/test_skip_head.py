"""The skip head (MethodConfig.head = "skip"): the taps it finds in an encoder, an untrained skip
head that is exactly SimpleBaseline's, gradients that reach the laterals, a run that trains, reloads
and exports behind the parity gate (with the sub-pixel head rewrite too), and the refusals."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_train.models.student import LandmarkStudent, encoder_stage_outputs, skip_taps
from tests.train._tiny_training import TINY, tiny_config, tiny_data, tiny_teachers


def _tiny_encoder() -> nn.Sequential:
    from tests.train._tiny_training import _network

    return _network(False).encoder


def test_taps_are_the_last_stage_at_each_finer_stride():
    # tiny encoder: conv /4, relu /4, conv /16, relu /16, pool /32 -> for /16, /8, /4: relu, none, relu
    assert skip_taps(_tiny_encoder()) == ([3, None, 1], [16, None, 8])


def test_the_hse_encoder_gives_its_stride_16_8_4_blocks():
    from ctd_train.teachers._registry import teacher_skeleton

    teacher = teacher_skeleton("hse-mobilenet-vggface2")
    encoder = teacher.network.encoder.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(encoder.forward_stages(x)[-1], encoder(x))
    taps, channels = skip_taps(encoder)
    assert taps == [11, 5, 3] and channels == [512, 256, 128]


@pytest.mark.parametrize("name, taps", [("dlib-resnet29", [4, 3, 2]), ("resnet50-vggface2", [6, 5, 4])])
def test_the_other_teachers_get_their_nearest_levels(name, taps):
    from ctd_train.models.student import build_student
    from ctd_train.teachers._registry import teacher_skeleton

    student = build_student(teacher_skeleton(name), 14, head_channels=8, head="skip").eval()
    assert student.taps == taps
    with torch.no_grad():
        assert student(torch.zeros(1, 3, 256, 256)).shape == (1, 14, 64, 64)


def test_the_recipe_defaults_to_skip_and_old_configs_stay_simple(tmp_path):
    from ctd_train.config import TrainConfig
    from ctd_train.methods import MethodConfig

    assert TrainConfig(data="d", out="o").method.head == "skip"
    assert MethodConfig.from_dict({"name": "ft", "head_channels": 256}).head == "simple"


def _student(head: str) -> LandmarkStudent:
    torch.manual_seed(0)
    return LandmarkStudent(_tiny_encoder(), 16, num_landmarks=14, head_channels=8, head=head)


def test_an_untrained_skip_head_is_simplebaseline_and_learns_its_laterals():
    student = _student("skip").eval()
    x = torch.randn(2, 3, 64, 64)
    feats, skips = student._encode(x)
    assert [None if s is None else tuple(s.shape[1:]) for s in skips] == [(16, 4, 4), None, (8, 16, 16)]
    with torch.no_grad():
        assert torch.equal(student.head(feats, skips), student.head(feats, [None] * 3))
    assert student(x).shape == (2, 14, 16, 16)
    student.train()
    student(x).square().sum().backward()
    lateral_bn = [m for m in student.head.laterals.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(lateral_bn) == 2 and all(m.weight.grad.abs().sum() > 0 for m in lateral_bn)
    # odd sizes: the lateral is resized to the deconvolution's output
    assert student.eval()(torch.randn(1, 3, 72, 72)).shape == (1, 14, 18, 18)


def test_refusals():
    class Opaque(nn.Module):
        def forward(self, x):
            return x[:, :, ::32, ::32]

    with pytest.raises(CtdError, match="no forward_stages and is no nn.Sequential"):
        encoder_stage_outputs(Opaque(), torch.zeros(1, 3, 64, 64))
    with pytest.raises(CtdError, match="no stage at a finer stride"):
        LandmarkStudent(nn.Sequential(nn.Conv2d(3, 4, 32, stride=32)), 4, num_landmarks=2, head="skip")
    with pytest.raises(CtdError, match="unknown head"):
        _student("unet")
    from ctd_train.methods import MethodConfig

    with pytest.raises(CtdError, match="unknown head 'unet'"):
        MethodConfig("ft", head="unet").validate()


def test_a_skip_run_trains_reloads_and_exports(tmp_path, monkeypatch):
    from ctd_export.onnx_export import ExportOptions, export_run
    from ctd_export.op_support import used_ops
    from ctd_train.checkpoint import load_run
    from ctd_train.methods import MethodConfig
    from ctd_train.trainer import train

    tiny_teachers(monkeypatch)
    data = tiny_data(tmp_path / "data")
    config = tiny_config(data, tmp_path / "run", method="ft", epochs=1, teacher=TINY)
    config.method = MethodConfig("ft", head_channels=16, head="skip")
    run = train(config, progress=False, evaluate_test=False)
    assert json.loads((run / "config.json").read_text())["method"]["head"] == "skip"
    loaded = load_run(run)
    assert loaded.predictor.taps == [3, None, 1]
    state = torch.load(run / "checkpoint_best.pt", map_location="cpu", weights_only=True)["predictor"]
    assert any(k.startswith("head.laterals.") for k in state)

    plain = export_run(run, tmp_path / "plain", ExportOptions(precisions=("fp32",), max_images=4))
    assert plain.parity.passed
    ops = used_ops(onnx.load(str(plain.model_path)))
    assert ops["ConvTranspose"] == 3 and ops["Add"] >= 2
    sub = export_run(run, tmp_path / "sub", ExportOptions(precisions=("fp32",), head_op="subpixel2x2", max_images=4))
    assert sub.parity.passed and "ConvTranspose" not in used_ops(onnx.load(str(sub.model_path)))


def test_cli_head_option_reaches_the_config(tmp_path, monkeypatch, capsys):
    from tests._cli import run_ctd

    tiny_teachers(monkeypatch)
    data = tiny_data(tmp_path / "data")
    args = ["train", "--data", str(data), "--teacher", TINY, "--method", "ft", "--head-channels", "8",
            "--input-size", "64", "--epochs", "1", "--val-subjects", "1", "--test-subjects", "1", "--threads", "1",
            "--no-progress"]
    code, _, err = run_ctd([*args, "--out", str(tmp_path / "bad"), "--head", "unet"], capsys, fold_stderr=True)
    assert code == 2 and "unknown head 'unet'" in err and not (tmp_path / "bad").exists()
    code, _, err = run_ctd([*args, "--out", str(tmp_path / "ok"), "--head", "skip"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["method"]["head"] == "skip"
