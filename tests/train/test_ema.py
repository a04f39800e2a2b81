"""The weight average (TrainConfig.ema_decay): the decay's warm-up, the average's arithmetic,
checkpoints that hold the average (validated, evaluated, exported) with the raw weights beside them
for resuming, and a resumed run identical to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_train.checkpoint import BEST, LAST
from ctd_train.config import TrainConfig
from ctd_train.ema import COUNT_KEY, RAW_KEY, WeightAverage, warmed_decay
from ctd_train.trainer import train
from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers


@pytest.fixture()
def data(tmp_path, monkeypatch):
    tiny_teachers(monkeypatch)
    return tiny_data(tmp_path / "data")


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_decay_warms_up_to_the_configured_value():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 10) == pytest.approx(11 / 20)
    assert warmed_decay(0.999, 100_000) == 0.999
    assert all(warmed_decay(0.99, n) <= warmed_decay(0.99, n + 1) for n in range(300))


def test_the_average_follows_the_formula_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    avg = WeightAverage(model, 0.9)
    w0 = model[0].weight.detach().clone()
    avg.update(model)                                  # the first update copies
    assert torch.equal(avg.module[0].weight, w0) and avg.updates == 1
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked.fill_(7)
    avg.update(model)
    d = warmed_decay(0.9, 1)                           # 2/11: the warm-up, not 0.9 yet
    assert torch.allclose(avg.module[0].weight, d * w0 + (1 - d) * (w0 + 1.0))
    assert int(avg.module[1].num_batches_tracked) == 7
    assert avg.module[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_decay_outside_the_open_interval_is_refused(data, tmp_path):
    with pytest.raises(ValueError):
        WeightAverage(nn.Linear(1, 1), 1.0)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(CtdError, match="ema_decay must be in"):
            tiny_config(data, tmp_path / "r", ema_decay=bad).check()


def test_checkpoints_hold_the_average_and_the_raw_weights_for_resuming(data, tmp_path):
    plain = train(tiny_config(data, tmp_path / "plain", epochs=2), progress=False, evaluate_test=False)
    ema = train(tiny_config(data, tmp_path / "ema", epochs=2, ema_decay=0.9), progress=False, evaluate_test=False)
    assert json.loads((ema / "config.json").read_text())["ema_decay"] == 0.9
    last, plain_last = _ckpt(ema / LAST), _ckpt(plain / LAST)
    raw, averaged = last["training"][RAW_KEY], last["predictor"]
    assert last["training"][COUNT_KEY] > 1
    # the same seed trains the same raw weights; the checkpoint's predictor is their average
    assert all(torch.equal(raw[k], plain_last["predictor"][k]) for k in raw)
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw if raw[k].is_floating_point())
    assert RAW_KEY not in (_ckpt(ema / BEST).get("training") or {})
    # validation saw the average, so its numbers differ from the plain run's
    assert [r["val_me_px"] for r in _metrics(ema)] != [r["val_me_px"] for r in _metrics(plain)]


def test_resumed_average_matches_an_uninterrupted_run(data, tmp_path):
    full = train(tiny_config(data, tmp_path / "full", epochs=3, ema_decay=0.9), progress=False, evaluate_test=False)

    class Stop(Exception):
        pass

    def stop_after_first(epoch, record):
        if epoch == 1:
            raise Stop()

    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        train(tiny_config(data, cut, epochs=3, ema_decay=0.9), progress=False, on_epoch_end=stop_after_first)
    train(tiny_config(data, cut, epochs=3, ema_decay=0.9), progress=False, evaluate_test=False)
    a, b = _ckpt(full / LAST), _ckpt(cut / LAST)
    for part in (a["predictor"], a["training"][RAW_KEY]):
        other = b["predictor"] if part is a["predictor"] else b["training"][RAW_KEY]
        assert all(torch.equal(part[k], other[k]) for k in part)
    assert a["training"][COUNT_KEY] == b["training"][COUNT_KEY]
    assert [r["val_me_px"] for r in _metrics(full)] == [r["val_me_px"] for r in _metrics(cut)]


def test_a_run_without_an_average_cannot_be_resumed_with_one(data, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(data, run, epochs=1), progress=False, evaluate_test=False)
    with pytest.raises(CtdError, match="ema_decay"):
        train(tiny_config(data, run, epochs=2, ema_decay=0.9), progress=False, evaluate_test=False)


def test_an_old_config_without_the_field_loads_without_an_average(data, tmp_path):
    d = tiny_config(data, tmp_path / "r").to_dict()
    d.pop("ema_decay")
    assert TrainConfig.from_dict(d).ema_decay == 0.0
