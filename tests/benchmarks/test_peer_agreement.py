"""benchmarks/peer_agreement.py on a tiny run and made-up peers: a peer's score and its correlation
with ctd come from its corners, a consensus is the mean of the two, and a peer that lacks one of
ctd's test images is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import ensemble  # noqa: E402
import peer_agreement  # noqa: E402


@pytest.fixture()
def run(tmp_path, monkeypatch):
    from ctd_train.trainer import train
    from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers

    tiny_teachers(monkeypatch)
    data = tiny_data(tmp_path / "data")
    out = tmp_path / "runs" / "ft-s0"
    train(tiny_config(data, out, method="ft", epochs=1), progress=False, evaluate_test=False)
    return out


def _peers_json(folder: Path, images: list[str], corners: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    peers = {name: {"status": "ok", "per_image": [
        {"image": im, "detected": True,
         "calibrated": {"endocanthion": c[i, 0].tolist(), "exocanthion": c[i, 1].tolist()},
         "raw": {"endocanthion": c[i, 0].tolist(), "exocanthion": c[i, 1].tolist()}}
        for i, im in enumerate(images)]} for name, c in corners.items()}
    (folder / "peers.json").write_text(json.dumps({"peers": peers}))
    return folder


def test_peers_consensus_and_correlation(run, tmp_path):
    test = ensemble.member_predictions(run)["test"]
    pair = list(test["pair"])
    truth = np.asarray(test["gt"], dtype=np.float64)[:, pair]
    mid = truth.mean(axis=1, keepdims=True)
    long10 = mid + 1.1 * (truth - mid)                      # every PFL 10% too long
    _peers_json(tmp_path / "peers_s0", test["images"], {"exact": truth, "long": long10})

    out = tmp_path / "res" / "agree"
    assert peer_agreement.main(["--root", str(run.parent), "--member", "ft", "--seeds", "0", "--threads", "1",
                                "--peers", str(tmp_path / "peers_s{seed}"), "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["seeds"]["0"]
    assert rows["exact"]["pfl_abs"] == pytest.approx(0.0, abs=1e-9)
    assert rows["exact"]["error_correlation_with_ctd"] is None       # an error that never varies
    assert rows["long"]["pfl_abs"] == pytest.approx(0.1, abs=1e-6)
    assert rows["long"]["pfl_signed"] == pytest.approx(0.1, abs=1e-6)
    e_ctd = peer_agreement.signed_pfl_error(np.asarray(test["pred"], dtype=np.float64)[:, pair], truth)
    assert rows["long"]["abs_difference_from_ctd"] == pytest.approx(float(np.mean(np.abs(e_ctd - 0.1))), abs=1e-6)
    # the consensus with the exact peer is ctd's corners moved halfway to the truth
    ctd = np.asarray(test["pred"], dtype=np.float64)[:, pair]
    half = peer_agreement.signed_pfl_error((ctd + truth) / 2, truth)
    assert rows["ctd + exact"]["pfl_abs"] == pytest.approx(float(np.mean(np.abs(half))), rel=1e-9)
    # the correlation is of the signed errors, image by image
    e_ctd = peer_agreement.signed_pfl_error(ctd, truth)
    noisy = mid + (1.0 + 0.5 * e_ctd[:, None, None]) * (truth - mid)   # half ctd's error
    _peers_json(tmp_path / "peers_s0", test["images"], {"follows": noisy})
    assert peer_agreement.main(["--root", str(run.parent), "--member", "ft", "--seeds", "0", "--threads", "1",
                                "--peers", str(tmp_path / "peers_s{seed}"), "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["seeds"]["0"]
    assert rows["follows"]["error_correlation_with_ctd"] == pytest.approx(1.0, abs=1e-9)
    # half of ctd's error, perfectly correlated: shared RMS = sqrt(0.5) x ctd's SD, the peer has none of its own
    sd = float(np.std(e_ctd))
    assert rows["follows"]["shared_rms"] == pytest.approx(np.sqrt(0.5) * sd, rel=1e-6)
    assert rows["follows"]["peer_own_rms"] == pytest.approx(0.0, abs=1e-6)
    assert rows["follows"]["ctd_own_rms"] == pytest.approx(np.sqrt(0.5) * sd, rel=1e-6)
    assert "| ctd + follows |" in out.with_suffix(".md").read_text()
    common = rows["common error"]     # the mean of ctd's error and half of it, split by subject
    assert common["rms"] == pytest.approx(float(np.sqrt(np.mean((0.75 * e_ctd) ** 2))), rel=1e-6)
    assert common["between_subjects_rms"] ** 2 + common["within_subjects_rms"] ** 2 == pytest.approx(common["rms"] ** 2)
    assert "common error" in out.with_suffix(".md").read_text()


def test_a_peer_without_one_of_the_test_images_is_refused(run, tmp_path):
    test = ensemble.member_predictions(run)["test"]
    truth = np.asarray(test["gt"], dtype=np.float64)[:, list(test["pair"])]
    _peers_json(tmp_path / "peers_s0", test["images"][1:], {"short": truth[1:]})
    with pytest.raises(SystemExit, match="short has no calibrated corners"):
        peer_agreement.main(["--root", str(run.parent), "--member", "ft", "--seeds", "0", "--threads", "1",
                             "--peers", str(tmp_path / "peers_s{seed}"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o.json").exists()
