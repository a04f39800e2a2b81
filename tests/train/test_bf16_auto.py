"""bfloat16 autocast is on only where the device computes in bfloat16: an AVX2-only CPU emulates it
and trains about 25x slower (benchmarks/results/train_settings_epyc_avx2.md). The choice is made
when a run starts, saved in its config, and kept when the run resumes on another machine."""

from __future__ import annotations

import json

import pytest

import ctd_runtime.machine as machine
from ctd_train.config import TrainConfig, auto_bf16
from ctd_train.trainer import train
from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers


@pytest.mark.parametrize("flags,expected", [
    ({"avx2", "fma"}, None),
    ({"avx2", "avx512f", "avx512bw"}, None),        # AVX-512 without its BF16 extension still emulates
    ({"avx2", "avx512f", "avx512_bf16"}, "avx512_bf16"),
    ({"avx512_bf16", "amx_bf16"}, "amx_bf16"),
])
def test_native_bf16_is_read_from_the_cpu_flags(flags, expected):
    assert machine.cpu_bf16_support(flags) == expected


def test_cpu_flags_are_read_on_x86_linux():
    flags = machine.cpu_flags()
    if not flags:
        pytest.skip("no x86 /proc/cpuinfo flags line on this platform")
    assert "fpu" in flags and machine.cpu_bf16_support() == machine.cpu_bf16_support(flags)


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_bf16_must_be_a_bool_or_auto(bad):
    from ctd_runtime.errors import CtdError

    with pytest.raises(CtdError, match="bf16"):
        TrainConfig(data="d", out="o", bf16=bad).check()


def test_a_saved_config_with_auto_bf16_resolves_instead_of_reaching_autocast(monkeypatch):
    """`"bf16": null` in a config.json (written by hand, or by a tool) is auto, not a None that
    torch.autocast would reject."""
    monkeypatch.setattr(machine, "cpu_bf16_support", lambda flags=None: None)
    saved = TrainConfig(data="d", out="o", device="cpu").to_dict()
    assert saved["bf16"] is None
    assert TrainConfig.from_dict(saved).resolved().bf16 is False


@pytest.mark.parametrize("flag,expected", [(None, False), ("avx512_bf16", True)])
def test_auto_follows_the_cpu_on_a_cpu_device(monkeypatch, flag, expected):
    monkeypatch.setattr(machine, "cpu_bf16_support", lambda flags=None: flag)
    assert auto_bf16("cpu") is expected
    resolved = TrainConfig(data="d", out="o", device="cpu").resolved()
    assert resolved.bf16 is expected
    assert TrainConfig(data="d", out="o", device="cpu", bf16=not expected).resolved().bf16 is (not expected)


def test_the_run_saves_the_resolved_choice_and_a_resume_keeps_it(tmp_path, monkeypatch):
    tiny_teachers(monkeypatch)
    data = tiny_data(tmp_path / "data")
    monkeypatch.setattr(machine, "cpu_bf16_support", lambda flags=None: "avx512_bf16")

    def stop_after_first(epoch, record):
        raise KeyboardInterrupt

    config = tiny_config(data, tmp_path / "run", method="ft", epochs=2, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False, evaluate_test=False, on_epoch_end=stop_after_first)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["bf16"] is True
    # resumed on a machine without bfloat16: the run goes on as it started, not "a different config"
    monkeypatch.setattr(machine, "cpu_bf16_support", lambda flags=None: None)
    train(config, progress=False, evaluate_test=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    import torch

    assert torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=False)["config"]["bf16"] is True
    # a new run on that machine trains in float32
    fresh = train(tiny_config(data, tmp_path / "fresh", method="ft", epochs=1, device="cpu"), progress=False,
                  evaluate_test=False)
    assert json.loads((fresh / "config.json").read_text())["bf16"] is False
