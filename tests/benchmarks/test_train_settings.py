"""benchmarks/train_settings.py on the tiny teacher: every setting is timed on the same batches,
interleaved, and the table names the machine's bfloat16 support and the auto choice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import train_settings  # noqa: E402


def test_every_setting_is_timed_and_published(tmp_path, monkeypatch, capsys):
    from tests.train._tiny_training import TINY, tiny_data, tiny_teachers

    tiny_teachers(monkeypatch)
    data = tiny_data(tmp_path / "data", n_subjects=4, per_subject=2)
    out = tmp_path / "res" / "ts"
    assert train_settings.main(["--data", str(data), "--teacher", TINY, "--input-size", "64", "--steps", "2",
                                "--rounds", "2", "--warmup", "1", "--threads", "1", "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    rows = doc["rows"]
    assert list(rows) == list(train_settings.SETTINGS)
    for r in rows.values():
        assert r["steps"] == 4 and 0 < r["q1_s"] <= r["median_s"] <= r["q3_s"]
        assert abs(r["images_per_s"] - 2 / r["median_s"]) < 1e-9
    assert rows["float32"]["vs_float32"] == 1.0
    from ctd_runtime.machine import BF16_CPU_FLAGS

    assert isinstance(doc["meta"]["bf16_auto"], bool)
    assert doc["meta"]["machine"]["cpu_bf16"] in (*BF16_CPU_FLAGS, "none")
    assert doc["meta"]["bf16_auto"] == (doc["meta"]["machine"]["cpu_bf16"] != "none")
    table = out.with_suffix(".md").read_text()
    assert "| bf16 + channels_last |" in table and table in capsys.readouterr().out
