"""benchmarks/station_models.py on tiny runs (an ft run and a smaller kd student of it): exports
both precisions, scores the ONNX files on the same test crops as the checkpoint, keeps a complete
export on a rerun, writes the JSON and the table."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_station_models", REPO / "benchmarks" / "station_models.py")
station_models = importlib.util.module_from_spec(_spec)
sys.modules["bench_station_models"] = station_models  # dataclasses look their module up
_spec.loader.exec_module(station_models)


def test_station_models_on_tiny_runs(tmp_path, monkeypatch, capsys):
    from ctd_train.methods import MethodConfig
    from ctd_train.trainer import train
    from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers

    tiny_teachers(monkeypatch)
    data = tiny_data(tmp_path / "data")
    big = train(tiny_config(data, tmp_path / "runs" / "ft", method="ft", epochs=1), progress=False,
                evaluate_test=False)
    kd = tiny_config(data, tmp_path / "runs" / "kd", method="kd", epochs=1, input_size=32, teacher_run=str(big))
    kd = train(dataclasses.replace(kd, method=MethodConfig("kd", head_channels=8, ed_features="pooled")),
               progress=False, evaluate_test=False)
    argv = [str(big), str(kd), "--exports", str(tmp_path / "exports"), "--out-dir", str(tmp_path / "results"),
            "--calib-images", "2", "--max-images", "2"]
    doc = station_models.main(argv)

    assert [r["name"] for r in doc["runs"]] == ["ft", "kd"]
    ft_row, kd_row = doc["runs"]
    assert [kd_row[k] for k in ("method", "head_channels", "input_size", "teacher_run")] == ["kd", 8, 32, "ft"]
    assert kd_row["parameters"] < ft_row["parameters"]
    for r in doc["runs"]:
        rows = {row["precision"]: row for row in r["rows"]}
        assert set(rows) == {"torch fp32", "fp32", "int8"} and r["export"]["status"] == "exported"
        assert {row["n_images"] for row in rows.values()} == {2}          # one test subject, two images
        assert abs(rows["fp32"]["me_px"] - rows["torch fp32"]["me_px"]) < 0.1   # the parity gate's 0.1 px
        assert rows["fp32"]["max_diff_vs_fp32_px"] == 0.0 and rows["int8"]["gmacs"] > 0
    assert doc["runs"][1]["rows"][1]["gmacs"] < doc["runs"][0]["rows"][1]["gmacs"]   # smaller input and head
    saved = json.loads((tmp_path / "results" / "station_models.json").read_text())
    assert saved["runs"][1]["rows"] == doc["runs"][1]["rows"]
    table = (tmp_path / "results" / "station_models.md").read_text()
    assert "| kd | kd | 8 | 32 | ft | int8 |" in table and "ctd bench" in table

    again = station_models.main(argv)        # complete exports are kept, the numbers are the same
    assert [r["export"]["status"] for r in again["runs"]] == ["kept", "kept"]
    assert again["runs"][1]["rows"] == doc["runs"][1]["rows"]
