"""Is ctd's remaining PFL error its own, or shared with the ready-made detectors? And does a consensus
of ctd and a calibrated peer measure PFL better than either?

    python benchmarks/peer_agreement.py --root runs/recipe-study --member skip --seeds 0 1 2 \
        --peers 'benchmarks/results/peers_split_s{seed}' --out benchmarks/results/peer_agreement

For each seed: ctd's run ROOT/MEMBER-sSEED is evaluated on its test split (its own decode, the
ground-truth face box), and `benchmarks/peers.py`'s per-image corners of the same images are read
from the --peers folder (`{seed}` filled in; calibrated on the same seed's training subjects). Per
peer it reports the correlation of the signed relative PFL errors of ctd and the peer over the
test images (an error both make comes from the image or its annotation, not from either model),
the mean |difference| of their PFLs, and the scores of their consensus: the mean of ctd's and the peer's eye corners in source pixels,
equal weights, nothing fitted on test. The test split is all these files share, so there is no
validation choice here: this is an analysis of where the error is, not a recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _results import publish_by_seed
from cascade import stage_result
from ensemble import member_predictions

CORNERS = ("endocanthion", "exocanthion")   # the order of the schema's PFL pair (imm14: 25, 21)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="folder of the ctd runs (NAME-sSEED)")
    p.add_argument("--member", required=True, help="the ctd run name NAME")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--peers", required=True, help="folder of peers.py's peers.json for each seed, with {seed}")
    p.add_argument("--calibration", choices=("calibrated", "raw"), default="calibrated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "peer_agreement")
    return p.parse_args(argv)


def peer_corners(peers_json: Path, images: list[str], kind: str) -> dict[str, np.ndarray]:
    """{peer: [N, 2, 2] corners (endocanthion, exocanthion) in source px} for `images`, in order;
    SystemExit when a peer lacks an image or found no face there (it cannot join a consensus)."""
    doc = json.loads(peers_json.read_text())
    out: dict[str, np.ndarray] = {}
    for name, peer in doc["peers"].items():
        if peer.get("status") not in (None, "ok") or "per_image" not in peer:
            continue
        by_image = {row["image"]: row for row in peer["per_image"]}
        missing = [im for im in images if im not in by_image or not by_image[im].get("detected")]
        if missing:
            raise SystemExit(f"{peers_json}: {name} has no {kind} corners for {len(missing)} of ctd's test images "
                             f"({', '.join(missing[:3])}...): run peers.py with this seed's split.json")
        out[name] = np.asarray([[by_image[im][kind][c] for c in CORNERS] for im in images], dtype=np.float64)
    if not out:
        raise SystemExit(f"{peers_json}: no peer with per-image corners")
    return out


def signed_pfl_error(corners: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Relative signed PFL error of [N, 2, 2] corners against [N, 2, 2] true corners."""
    pfl = np.linalg.norm(corners[:, 0] - corners[:, 1], axis=1)
    true = np.linalg.norm(truth[:, 0] - truth[:, 1], axis=1)
    return (pfl - true) / true


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r, None where either side does not vary (an exact peer)."""
    if np.std(a) < 1e-12 or np.std(b) < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def shared_error(e_ctd: np.ndarray, e_peer: np.ndarray) -> dict[str, float | None]:
    """The RMS both detectors share (the square root of the covariance of their signed errors about
    their means; None when negative) and what is left of each one's own, so shared^2 + own^2 is
    each one's error variance."""
    cov = float(np.mean((e_ctd - e_ctd.mean()) * (e_peer - e_peer.mean())))
    own = {"ctd_own_rms": float(np.sqrt(max(np.var(e_ctd) - cov, 0.0))),
           "peer_own_rms": float(np.sqrt(max(np.var(e_peer) - cov, 0.0)))}
    return {"shared_rms": float(np.sqrt(cov)) if cov >= 0 else None, **own}


def common_error(errors: list[np.ndarray], subjects: list[str]) -> dict[str, float]:
    """The detectors' common signed error (their per-image mean) as RMS, split into the part each
    subject's captures share (its mean) and the rest; between^2 + within^2 = rms^2."""
    e = np.mean(errors, axis=0)
    subj = np.asarray(subjects)
    between = np.zeros_like(e)
    for s in set(subjects):
        between[subj == s] = e[subj == s].mean()
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))   # noqa: E731
    return {"rms": rms(e), "between_subjects_rms": rms(between), "within_subjects_rms": rms(e - between)}


def seed_result(test: dict[str, Any], peers: dict[str, np.ndarray]) -> dict[str, Any]:
    """ctd alone, each peer alone and each consensus, scored on the PFL pair, with the error correlation."""
    pair = list(test["pair"])
    pred, gt = np.asarray(test["pred"], dtype=np.float64), np.asarray(test["gt"], dtype=np.float64)
    truth, ctd = gt[:, pair], pred[:, pair]

    def score(corners: np.ndarray) -> dict[str, Any]:
        full = pred.copy()
        full[:, pair] = corners
        r, _ = stage_result(full, gt, test["subjects"], test["types"], test["pair"])
        return {k: r[k] for k in ("pfl_abs", "pfl_signed", "corner_px", "retest")}

    e_ctd = signed_pfl_error(ctd, truth)
    rows: dict[str, Any] = {"ctd": score(ctd)}
    for name, corners in peers.items():
        e_peer = signed_pfl_error(corners, truth)
        rows[name] = {**score(corners), "error_correlation_with_ctd": correlation(e_ctd, e_peer),
                      "abs_difference_from_ctd": float(np.mean(np.abs(e_ctd - e_peer))), **shared_error(e_ctd, e_peer)}
        rows[f"ctd + {name}"] = score((ctd + corners) / 2.0)
    rows["common error"] = common_error([e_ctd] + [signed_pfl_error(c, truth) for c in peers.values()],
                                        list(test["subjects"]))
    return rows


def markdown(meta: dict[str, Any], seeds: dict[int, dict[str, Any]]) -> str:
    rows = list(next(iter(seeds.values())))

    def cell(row: str, key: str, scale: float = 100.0, fmt: str = ".2f", unit: str = "%") -> str:
        vals = [s[row][key] for s in seeds.values() if s[row].get(key) is not None]
        if not vals:
            return ""
        per = ", ".join(f"{scale * v:{fmt}}" for v in vals)
        return f"{scale * np.mean(vals):{fmt}}{unit} ({per})" if len(vals) > 1 else f"{scale * vals[0]:{fmt}}{unit}"

    lines = [f"# ctd and the peers: shared error and consensus ({meta['calibration']} peers)", "",
             f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; ctd runs {meta['root']}/"
             f"{meta['member']}-sSEED; peers {meta['peers']}; seeds {meta['seeds']}; test images only; means over "
             "seeds (per seed in brackets); PFL errors in % of the true PFL",
             "- consensus: the mean of ctd's and the peer's two eye corners (equal weights, nothing fitted)",
             "- abs PFL difference from ctd: mean |PFL_peer - PFL_ctd| / true PFL, how far the two detectors are "
             "apart, against how far each is from the annotation (mean abs PFL error); RMS shared: the square root of the "
             "covariance of the two signed errors, the part of each one's error variance the other makes too; own: the rest",
             "",
             "| | mean abs PFL error | signed | eye corners (px) | test-retest (types 1 vs 5) | "
             "correlation of signed errors with ctd | abs PFL difference from ctd | RMS shared with ctd | "
             "peer's own RMS | ctd's own RMS |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in [r for r in rows if r != "common error"]:
        lines.append(f"| {r} | {cell(r, 'pfl_abs')} | {cell(r, 'pfl_signed')} | {cell(r, 'corner_px', 1.0, unit='')} | "
                     f"{cell(r, 'retest')} | {cell(r, 'error_correlation_with_ctd', 1.0, '.2f', '')} | "
                     f"{cell(r, 'abs_difference_from_ctd')} | {cell(r, 'shared_rms')} | {cell(r, 'peer_own_rms')} | "
                     f"{cell(r, 'ctd_own_rms')} |")
    lines += ["", "The detectors' common error (the per-image mean of ctd's and every peer's signed error), RMS: "
              f"{cell('common error', 'rms')}; the part every capture of a subject shares "
              f"{cell('common error', 'between_subjects_rms')}; the rest {cell('common error', 'within_subjects_rms')}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    from ctd_runtime.machine import describe_machine

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        run = args.root / f"{args.member}-s{seed}"
        if not (run / "checkpoint_best.pt").is_file():
            raise SystemExit(f"no finished run at {run}")
        test = member_predictions(run)["test"]
        peers_json = Path(args.peers.format(seed=seed)) / "peers.json"
        if not peers_json.is_file():
            raise SystemExit(f"no {peers_json}: run benchmarks/peers.py with {run}/split.json")
        seeds[seed] = seed_result(test, peer_corners(peers_json, test["images"], args.calibration))
    meta = {"machine": describe_machine(), "root": str(args.root), "member": args.member, "seeds": args.seeds,
            "peers": args.peers, "calibration": args.calibration}
    publish_by_seed(args.out, meta, seeds, markdown(meta, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
