"""benchmarks/head_rewrite.py on a tiny run (a check that it runs and what it writes, no timing
claim): every head op in FP32 and INT8, the same landmarks across head ops, ONNX Runtime's profile
per operator type, and a spinning session refused."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.export.test_export_cli import trained  # noqa: F401 - the module-scoped run-dir fixture

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_head_rewrite", REPO / "benchmarks" / "head_rewrite.py")
head_rewrite = importlib.util.module_from_spec(_spec)
sys.modules["bench_head_rewrite"] = head_rewrite
_spec.loader.exec_module(head_rewrite)


def test_head_rewrite_on_a_tiny_run(trained, tmp_path, capsys):  # noqa: F811
    run_dir, data = trained
    out = tmp_path / "head_rewrite.json"
    head_rewrite.main(["--run", str(run_dir), "--data", str(data), "--images", "2", "--calibration", "3",
                       "--warmup", "1", "--iters", "2", "--rounds", "2", "--profile", "2", "--top", "100", "--out", str(out),
                       "--work-dir", str(tmp_path / "work")])
    result = json.loads(out.read_text())
    rows = result["results"]
    assert set(rows) == {f"{op} {p}" for op in head_rewrite.HEAD_OPS for p in ("fp32", "int8")}
    for key, row in rows.items():
        assert len(row["round_medians_ms"]) == 2 and row["calls"] == 4
        assert row["spread_ms"][0] <= row["median_ms"] <= row["spread_ms"][1]
        if key.endswith("fp32"):  # the same network: the same landmarks
            assert row["vs_convtranspose"]["px_max"] < 1e-2, key
    assert rows["convtranspose fp32"]["x_vs_convtranspose"] == 1.0
    profiles = result["profiles"]
    ops = {key: [e["op"] for e in prof["top_ops"]] for key, prof in profiles.items()}
    assert "ConvTranspose" in ops["convtranspose fp32"] and "ConvTranspose" not in ops["subpixel fp32"]
    assert "DepthToSpace" in ops["subpixel fp32"]
    for prof in profiles.values():  # every operator type listed: the shares add up
        assert abs(sum(e["share"] for e in prof["top_ops"]) - 1) < 1e-6
        assert all(e["ms_per_call"] >= 0 for e in prof["top_ops"])
    printed = capsys.readouterr().out
    assert "spinning off" in printed and "profile: subpixel2x2 int8" in printed


def test_a_spinning_session_is_refused(trained, tmp_path, monkeypatch):  # noqa: F811
    run_dir, _ = trained
    from ctd_train.checkpoint import load_run

    path = head_rewrite.write_graph(load_run(run_dir), "subpixel", tmp_path / "model.onnx")
    assert head_rewrite.checked_session(path, 1) is not None
    real = head_rewrite.open_session
    monkeypatch.setattr(head_rewrite, "open_session", lambda p, **kw: real(p, spinning=True, **kw))
    with pytest.raises(RuntimeError, match="spins"):
        head_rewrite.checked_session(path, 1)
