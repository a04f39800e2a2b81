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


def test_cpu_flags_are_read_on_linux():
    flags = machine.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this platform")
    assert "fpu" in flags or "fp" in flags or "neon" in flags or len(flags) > 5


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
    assert json.loads((run / "config.json").read_text())["bf16"] is True
    # a new run on that machine trains in float32
    fresh = train(tiny_config(data, tmp_path / "fresh", method="ft", epochs=1, device="cpu"), progress=False,
                  evaluate_test=False)
    assert json.loads((fresh / "config.json").read_text())["bf16"] is False
