"""Ready-made detectors a user would pick instead of ctd, on the same IMM faces, scored with ctd's
own metrics: MediaPipe Face Mesh (468 points, and 478 with refined eyes) and dlib's 68- and
5-point shape predictors on dlib's frontal face detector.

Each peer's two corners of the subject's right eye are mapped to the PFL pair of the imm14
schema (IMM 25 endocanthion, 21 exocanthion): dlib 68: 39 / 36, dlib 5: 3 / 2, Face Mesh: 133 / 33.
The mapping is checked on every detected image: each peer corner must lie nearest to its IMM
corner among the four IMM eye corners (13, 17, 21, 25).

Peers follow other annotation conventions than IMM's (dlib's PFL is ~15% short), so they are
scored raw and calibrated: per corner a 2D offset in the predicted eye's own frame (along and
across the predicted endocanthion -> exocanthion axis, in units of the predicted PFL), then a
scale on the PFL (least squares on the relative PFL error), fitted on training subjects only:
leave one subject out by default, or the given training subjects (the test subjects of a ctd run:
pass its split.json). An image where a peer finds no face counts as a failure: it is reported
(count and names), enters the failure rate, and is left out of the error means.

Also: test-retest PFL difference over image types 1 and 5 of each subject (ctd_runtime.repeatability),
the annotators' own (the floor), errors per image type, and the median time per image
(detection included; information only, not the latency benchmark).

Writes RESULTS/peers.json (per-peer summary and each image's two corners, raw and calibrated, for
paired comparisons) and RESULTS/peers.md.

    python benchmarks/peers.py                                   # all 180 images, leave-one-subject-out
    python benchmarks/peers.py --test-subjects-file runs/paper_table/ft-s0/split.json \\
        --train-subjects-file runs/paper_table/ft-s0/split.json   # the test subjects of a ctd run

The detectors themselves (and the protobuf arrangement MediaPipe's legacy API needs) are in
benchmarks/_peers_core.py, shared with benchmarks/latency.py, which times them beside ctd's contenders.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from ctd_runtime.atomic import write_json_atomic, write_text_atomic
from ctd_runtime.errors import CtdError
from ctd_runtime.image_io import read_image
from ctd_runtime.machine import describe_machine
from ctd_runtime.metrics import evaluate_landmarks, pfl
from ctd_runtime.repeatability import errors_by_value, pairs_of_values, read_column, retest
from ctd_runtime.schema import get_schema

if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling module, however this file is loaded
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers_core import PEERS, Detector, open_peers, versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "imm-face"
PAIR = (0, 1)                      # corners are stored as [endocanthion, exocanthion]
CORNERS = ("endocanthion", "exocanthion")
IMM_EYE_CORNERS = (13, 17, 21, 25)  # for the mapping check: left exo, left endo, right exo, right endo


# ---------------------------------------------------------------------------------------------
# the data


@dataclass
class Faces:
    """The images, their subjects and types, and the true corners [N, 2, 2] (endo, exo) and
    the four IMM eye corners [N, 4, 2] of the mapping check."""

    root: Path
    names: list[str]
    paths: list[Path]
    subjects: list[str]
    types: list[str]
    gt: np.ndarray
    eye_corners: np.ndarray
    source_pair: tuple[int, int]


def load_faces(data: Path, metadata: Path, type_column: str, schema_name: str) -> Faces:
    from ctd_train.data.annotations import read_annotations  # numpy + OpenCV only, no torch

    images = read_annotations(data, validate_images=False)
    schema = get_schema(schema_name)
    pair = (schema.source_indices[schema.pfl_pair[0]], schema.source_indices[schema.pfl_pair[1]])
    names = images.image_names
    return Faces(root=Path(data), names=names, paths=list(images.image_paths), subjects=list(images.subjects),
                 types=read_column(metadata, type_column, names), gt=images.points[:, list(pair)],
                 eye_corners=images.points[:, list(IMM_EYE_CORNERS)], source_pair=pair)


def read_subjects(path: Path, split: str, faces: Faces) -> list[str]:
    """Subjects from a text file (separated by spaces, commas or lines), a JSON list, or a ctd run's
    split.json (the subjects of its `split` images)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise CtdError(f"cannot read subjects file: {e.strerror}", path=path) from None
    if path.suffix != ".json":
        return text.replace(",", " ").split()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CtdError(f"not valid JSON: {e}", path=path) from None
    if isinstance(obj, list):
        return [str(s) for s in obj]
    if not isinstance(obj, dict) or split not in obj:
        raise CtdError(f"expected a list of subjects or a split.json with a {split!r} list", path=path)
    by_name = dict(zip(faces.names, faces.subjects))
    unknown = [n for n in obj[split] if n not in by_name]
    if unknown:
        raise CtdError(f"{len(unknown)} {split} image(s) are not in {faces.root}, e.g. {unknown[0]!r}", path=path)
    return sorted({by_name[n] for n in obj[split]})


def check_subjects(subjects: Sequence[str], faces: Faces, what: str) -> set[str]:
    known = set(faces.subjects)
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise CtdError(f"{what} subject {unknown[0]!r} is not in {faces.root} (subjects: {', '.join(sorted(known))})")
    if not subjects:
        raise CtdError(f"no {what} subjects given")
    return set(subjects)


# ---------------------------------------------------------------------------------------------
# running the peers


@dataclass
class PeerRun:
    """One peer on every image: its two corners and its time per image."""

    name: str
    corners: np.ndarray            # [N, 2, 2] (endo, exo); NaN where no face was found
    ms: np.ndarray                 # [N] per image, detection included


def run_peers(detectors: dict[str, Detector], faces: Faces, console: Console) -> dict[str, PeerRun]:
    n = len(faces.paths)
    runs = {name: PeerRun(name, np.full((n, 2, 2), np.nan), np.zeros(n)) for name in detectors}
    t0 = time.perf_counter()
    for i, path in enumerate(faces.paths):
        bgr = read_image(path)  # truncated or corrupt images refused, naming the file
        for name, detect in detectors.items():
            pts, ms = detect(bgr, i)
            runs[name].ms[i] = ms
            if pts is not None:
                spec = PEERS[name]
                runs[name].corners[i] = pts[[spec.endo, spec.exo]]
        if (i + 1) % 30 == 0:
            console.print(f"  {i + 1}/{n} images, {time.perf_counter() - t0:.0f} s")
    return runs


def mapping_check(run: PeerRun, faces: Faces) -> dict[str, Any]:
    """How often each peer corner lies nearest to its own IMM corner among IMM's four eye
    corners, and the distances on the first two detected images."""
    ok = np.isfinite(run.corners).all(axis=(1, 2))
    want = {"endocanthion": IMM_EYE_CORNERS.index(faces.source_pair[0]),
            "exocanthion": IMM_EYE_CORNERS.index(faces.source_pair[1])}
    out: dict[str, Any] = {"imm_indices": dict(zip(CORNERS, faces.source_pair)), "n_images": int(ok.sum())}
    if not ok.any():
        return out
    for k, corner in enumerate(CORNERS):
        d = np.linalg.norm(faces.eye_corners[ok] - run.corners[ok, k][:, None], axis=-1)  # [M, 4]
        out[f"{corner}_nearest_is_same"] = float(np.mean(d.argmin(axis=1) == want[corner]))
    examples = []
    for i in np.flatnonzero(ok)[:2]:
        d = np.linalg.norm(faces.eye_corners[i][None] - run.corners[i][:, None], axis=-1)  # [2, 4]
        examples.append({"image": faces.names[i], **{
            f"{c}_px_to_imm_{j}": round(float(d[k, m]), 2)
            for k, c in enumerate(CORNERS) for m, j in enumerate(IMM_EYE_CORNERS)}})
    out["examples"] = examples
    return out


# ---------------------------------------------------------------------------------------------
# calibration: per-corner offset in the predicted eye's frame, then a PFL scale


@dataclass(frozen=True)
class Calibration:
    """offsets[k] = (along, across) the predicted endo -> exo axis, in predicted-PFL units, for
    corner k (endo, exo); `scale` multiplies the PFL of the offset corners about their midpoint."""

    offsets: np.ndarray  # [2, 2]
    scale: float

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, **{f"offset_{c}": [float(v) for v in self.offsets[k]]
                                        for k, c in enumerate(CORNERS)}}


def eye_frame(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit axis u (endo -> exo), its normal v and the length d of predicted corners [M, 2, 2]."""
    e = corners[:, 1] - corners[:, 0]
    d = np.linalg.norm(e, axis=-1)
    u = e / d[:, None]
    v = np.stack([-u[:, 1], u[:, 0]], axis=-1)
    return u, v, d


def apply_offsets(offsets: np.ndarray, corners: np.ndarray) -> np.ndarray:
    u, v, d = eye_frame(corners)
    shift = offsets[None, :, 0:1] * u[:, None] + offsets[None, :, 1:2] * v[:, None]  # [M, 2, 2]
    return corners + d[:, None, None] * shift


def apply_calibration(cal: Calibration, corners: np.ndarray) -> np.ndarray:
    """Calibrated corners [M, 2, 2]; NaN rows (no face) stay NaN."""
    out = apply_offsets(cal.offsets, corners)
    mid = out.mean(axis=1, keepdims=True)
    return mid + cal.scale * (out - mid)


def fit_calibration(pred: np.ndarray, gt: np.ndarray) -> Calibration:
    """Offsets: the mean residual of each corner in the predicted eye's frame; then the scale that
    minimises the squared relative PFL error of the offset corners. Rows must all be finite."""
    u, v, d = eye_frame(pred)
    r = gt - pred                                                     # [M, 2, 2]
    offsets = np.stack([np.einsum("mkc,mc->mk", r, u), np.einsum("mkc,mc->mk", r, v)], axis=-1)
    offsets = (offsets / d[:, None, None]).mean(axis=0)               # [2, 2]
    ratio = pfl(apply_offsets(offsets, pred), PAIR) / pfl(gt, PAIR)
    return Calibration(offsets=offsets, scale=float(ratio.sum() / (ratio ** 2).sum()))


def folds(subjects: Sequence[str], train: set[str] | None, test: set[str] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit mask, apply mask) per fold: one per subject (leave one out), or the one given split."""
    s = np.asarray(subjects)
    if train is None and test is None:
        return [(s != x, s == x) for x in sorted(set(subjects))]
    assert train is not None and test is not None
    return [(np.isin(s, sorted(train)), np.isin(s, sorted(test)))]


def calibrate(pred: np.ndarray, gt: np.ndarray, fold_masks) -> tuple[np.ndarray, list[Calibration]]:
    """Calibrated corners for every applied image, each from a fit on its fold's training images."""
    out = np.full_like(pred, np.nan)
    found = np.isfinite(pred).all(axis=(1, 2))
    fits = []
    for fit_mask, apply_mask in fold_masks:
        use = fit_mask & found
        if not use.any():
            continue  # no detected training image: the fold stays uncalibrated (NaN)
        cal = fit_calibration(pred[use], gt[use])
        fits.append(cal)
        sel = apply_mask & found
        out[sel] = apply_calibration(cal, pred[sel])
    return out, fits


def mean_pfl_baseline(gt: np.ndarray, fold_masks) -> np.ndarray:
    """Signed relative PFL error [N] of predicting the training images' mean true PFL (NaN outside folds)."""
    true = pfl(gt, PAIR)
    err = np.full(len(gt), np.nan)
    for fit_mask, apply_mask in fold_masks:
        err[apply_mask] = true[fit_mask].mean() / true[apply_mask] - 1.0
    return err


# ---------------------------------------------------------------------------------------------
# scoring with ctd's metrics


def score(corners: np.ndarray, gt: np.ndarray, evaluated: np.ndarray, threshold: float) -> dict[str, Any]:
    """PFL and corner errors over the evaluated images that have a face; the rest are failures."""
    found = evaluated & np.isfinite(corners).all(axis=(1, 2))
    n_eval, n_found = int(evaluated.sum()), int(found.sum())
    out: dict[str, Any] = {"n_images": n_eval, "n_detected": n_found, "n_failed": n_eval - n_found}
    if n_found == 0:
        return {**out, "pfl_fail_rate": 1.0 if n_eval else None}
    rel = evaluate_landmarks(corners[found], gt[found], "pfl", threshold, PAIR)
    px = evaluate_landmarks(corners[found], gt[found], "px", threshold, PAIR)
    e = rel.pfl_error_signed
    return {**out,
            "pfl_abs_mean": float(np.abs(e).mean()), "pfl_abs_median": float(np.median(np.abs(e))),
            "pfl_signed_mean": float(e.mean()), "pfl_signed_sd": float(e.std()),
            "pfl_fail_rate": float(((np.abs(e) > threshold).sum() + n_eval - n_found) / n_eval),
            "corner_me_px": px.summary.me, "corner_me_pfl": rel.summary.me,
            **{f"{c}_px": float(px.per_landmark_mean[k]) for k, c in enumerate(CORNERS)}}


def retest_and_breakdown(corners: np.ndarray, faces: Faces, evaluated: np.ndarray,
                         pairs: list[tuple[int, int]]) -> tuple[dict, list[dict]]:
    idx = np.flatnonzero(evaluated)
    rt = retest(corners, PAIR, [p for p in pairs if evaluated[p[0]] and evaluated[p[1]]])
    by_type = errors_by_value([faces.types[i] for i in idx], corners[idx], faces.gt[idx], PAIR, unit="px")
    return rt.to_dict(), [r.to_dict() for r in by_type]


def summarize_peer(run: PeerRun, faces: Faces, fold_masks, evaluated, pairs, threshold) -> dict[str, Any]:
    calibrated, fits = calibrate(run.corners, faces.gt, fold_masks)
    out: dict[str, Any] = {"status": "ok", "description": PEERS[run.name].description,
                           "indices": {"endocanthion": PEERS[run.name].endo, "exocanthion": PEERS[run.name].exo},
                           "mapping_check": mapping_check(run, faces)}
    for label, c in (("raw", run.corners), ("calibrated", calibrated)):
        out[label] = score(c, faces.gt, evaluated, threshold)
        out[label]["retest"], out[label]["by_image_type"] = retest_and_breakdown(c, faces, evaluated, pairs)
    scales = [f.scale for f in fits]
    out["calibration"] = {"n_fits": len(fits), "scale_mean": float(np.mean(scales)) if fits else None,
                          "scale_range": [float(min(scales)), float(max(scales))] if fits else None,
                          "mean_fit": Calibration(np.mean([f.offsets for f in fits], axis=0),
                                                  float(np.mean(scales))).to_dict() if fits else None}
    missing = evaluated & ~np.isfinite(run.corners).all(axis=(1, 2))
    out["failed_images"] = [faces.names[i] for i in np.flatnonzero(missing)]
    out["ms_median"] = float(np.median(run.ms[evaluated]))
    out["per_image"] = [per_image_row(faces.names[i], run, calibrated, i) for i in np.flatnonzero(evaluated)]
    return out


def _xy(c: np.ndarray) -> dict[str, list[float]] | None:
    return None if not np.isfinite(c).all() else {k: [round(float(v), 3) for v in c[j]] for j, k in enumerate(CORNERS)}


def per_image_row(name: str, run: PeerRun, calibrated: np.ndarray, i: int) -> dict[str, Any]:
    return {"image": name, "detected": bool(np.isfinite(run.corners[i]).all()), "ms": round(float(run.ms[i]), 2),
            "raw": _xy(run.corners[i]), "calibrated": _xy(calibrated[i])}


# ---------------------------------------------------------------------------------------------
# reports


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


SUMMARY_HEADER = ("peer", "detected", "abs PFL err raw", "signed raw", "abs PFL err cal", "signed cal",
                  "corner px raw", "corner px cal", "retest raw", "retest cal", "ms/img")


def summary_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for name, p in result["peers"].items():
        if p["status"] != "ok":
            rows.append((name, "skipped", *["-"] * (len(SUMMARY_HEADER) - 2)))
            continue
        r, c = p["raw"], p["calibrated"]
        rows.append((name, f"{r['n_detected']}/{r['n_images']}", _pct(r.get("pfl_abs_mean")),
                     _pct(r.get("pfl_signed_mean")), _pct(c.get("pfl_abs_mean")), _pct(c.get("pfl_signed_mean")),
                     _num(r.get("corner_me_px")), _num(c.get("corner_me_px")), _pct(r["retest"]["mean"]),
                     _pct(c["retest"]["mean"]), _num(p["ms_median"], ".0f")))
    b, f = result["baselines"]["mean_pfl"], result["floor"]["annotators_retest"]
    rows.append(("mean PFL of the training images", "-", "-", "-", _pct(b["pfl_abs_mean"]),
                 _pct(b["pfl_signed_mean"]), "-", "-", "-", "-", "-"))
    rows.append(("annotators (floor)", "-", "-", "-", "-", "-", "-", "-", _pct(f["mean"]), "-", "-"))
    return rows


def print_table(result: dict[str, Any], console: Console) -> None:
    m = result["meta"]
    t = Table(title=f"peers on {m['n_evaluated']} IMM images ({m['calibration']}), "
                    f"{m['machine']['cpu']} ({m['machine']['cores']} cores)")
    for i, h in enumerate(SUMMARY_HEADER):
        t.add_column(h, no_wrap=i == 0)
    for row in summary_rows(result):
        t.add_row(*row)
    console.print(t)
    for name, note in result["skipped"].items():
        console.print(f"[yellow]{name}[/]: {note}" if not name.startswith("_") else f"note: {note}")


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = ["# Peers on the IMM faces", "",
             f"- machine: {m['machine']['cpu']}, {m['machine']['cores']} cores; packages: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             f"- images: {m['n_evaluated']} evaluated of {m['n_images']} ({m['data']}); PFL pair: IMM "
             f"{m['imm_pfl_pair'][0]} (endocanthion) - {m['imm_pfl_pair'][1]} (exocanthion), subject's right eye",
             f"- calibration: {m['calibration']}; {m['calibration_model']}",
             f"- errors: PFL error as a fraction of the true PFL; corner errors in px; failure rate: |PFL error| > "
             f"{m['threshold']:.0%} or no face found; test-retest: |PFL_a - PFL_b| / their mean over "
             f"{m['retest']} (calibration multiplies every PFL of a fold by one factor, so it leaves the relative "
             f"test-retest unchanged); ms: median per image, detection included (information only)", "",
             "| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(result)]
    lines += ["", "Failures (no face found) and mapping check (each corner nearest its IMM corner):", ""]
    for name, p in result["peers"].items():
        if p["status"] == "ok":
            mc = p["mapping_check"]
            lines.append(f"- {name}: {len(p['failed_images'])} failed ({', '.join(p['failed_images']) or 'none'}); "
                         f"FR raw {_pct(p['raw']['pfl_fail_rate'])}, calibrated {_pct(p['calibrated']['pfl_fail_rate'])}; "
                         f"mapping endo {_pct(mc.get('endocanthion_nearest_is_same'))}, "
                         f"exo {_pct(mc.get('exocanthion_nearest_is_same'))}")
        else:
            lines.append(f"- {name}: skipped ({p['note']})")
    lines += ["", "Mean |PFL error| per image type, raw / calibrated (n detected / n):", ""]
    ok = [n for n, p in result["peers"].items() if p["status"] == "ok"]
    lines += ["| type | " + " | ".join(ok) + " |", "|---|" + "---|" * len(ok)]
    for k, row in enumerate(result["peers"][ok[0]]["raw"]["by_image_type"] if ok else []):
        cells = []
        for n in ok:
            r, c = result["peers"][n]["raw"]["by_image_type"][k], result["peers"][n]["calibrated"]["by_image_type"][k]
            cells.append(f"{_pct(r['pfl_abs'])} / {_pct(c['pfl_abs'])} ({r['n_images'] - r['n_missing']}/{r['n_images']})")
        lines.append(f"| {row['value']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data folder (default: %(default)s)")
    p.add_argument("--metadata", type=Path, default=None, help="per-image CSV with --type-column (default: DATA/metadata.csv)")
    p.add_argument("--type-column", default="image_type", help="the column to break errors down by and pair repeats on")
    p.add_argument("--repeat-values", nargs=2, default=["1", "5"], metavar=("A", "B"),
                   help="per subject, the images of these two values are a test-retest pair (default: 1 5)")
    p.add_argument("--schema", default="imm14", help="the schema whose PFL pair is scored (default: %(default)s)")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--train-subjects", nargs="+", default=None, help="calibrate on these subjects")
    p.add_argument("--train-subjects-file", type=Path, default=None,
                   help="text/JSON list of subjects, or a ctd run's split.json (its train images' subjects)")
    p.add_argument("--test-subjects", nargs="+", default=None, help="score these subjects only")
    p.add_argument("--test-subjects-file", type=Path, default=None,
                   help="text/JSON list of subjects, or a ctd run's split.json (its test images' subjects)")
    p.add_argument("--threshold", type=float, default=0.10, help="failure threshold on |PFL error| / PFL")
    p.add_argument("--dlib-upsample", type=int, default=1, help="dlib face detector upsampling (default 1)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def resolve_split(args: argparse.Namespace, faces: Faces) -> tuple[set[str] | None, set[str] | None]:
    """(calibration subjects, test subjects); (None, None) means leave one subject out over all."""
    train = args.train_subjects or (read_subjects(args.train_subjects_file, "train", faces)
                                    if args.train_subjects_file else None)
    test = args.test_subjects or (read_subjects(args.test_subjects_file, "test", faces)
                                  if args.test_subjects_file else None)
    if train is None and test is None:
        return None, None
    everyone = set(faces.subjects)
    test_set = check_subjects(test, faces, "test") if test is not None else everyone - set(train)
    train_set = check_subjects(train, faces, "training") if train is not None else everyone - test_set
    if train_set & test_set:
        raise CtdError(f"subjects {', '.join(sorted(train_set & test_set))} are both training and test subjects")
    if not train_set or not test_set:
        raise CtdError("the split leaves no training or no test subject")
    return train_set, test_set


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = Console(width=160) if not Console().is_terminal else Console()
    faces = load_faces(args.data, args.metadata or args.data / "metadata.csv", args.type_column, args.schema)
    train, test = resolve_split(args, faces)
    fold_masks = folds(faces.subjects, train, test)
    evaluated = np.any([a for _, a in fold_masks], axis=0)
    pairs = pairs_of_values(faces.subjects, faces.types, *args.repeat_values)
    detectors, skipped = open_peers(args.peers, args.dlib_upsample)
    console.print(f"running {', '.join(detectors) or 'no peer'} on {len(faces.paths)} images")
    runs = run_peers(detectors, faces, console)
    base = mean_pfl_baseline(faces.gt, fold_masks)[evaluated]
    calibration = ("leave one subject out" if train is None else
                   f"fitted on {len(train)} training subjects ({' '.join(sorted(train))}), scored on "
                   f"{len(test)} test subjects ({' '.join(sorted(test))})")
    result: dict[str, Any] = {
        "benchmark": "peers",
        "meta": {"machine": describe_machine(), "versions": versions(), "data": str(args.data),
                 "command": " ".join(sys.argv), "n_images": len(faces.names), "n_evaluated": int(evaluated.sum()),
                 "schema": args.schema, "imm_pfl_pair": list(faces.source_pair), "threshold": args.threshold,
                 "calibration": calibration, "train_subjects": sorted(train) if train else None,
                 "test_subjects": sorted(test) if test else None,
                 "calibration_model": "per-corner 2D offset in the predicted eye's frame (units of predicted PFL), "
                                      "then a PFL scale (least squares on the relative PFL error)",
                 "retest": f"{args.type_column} {args.repeat_values[0]} vs {args.repeat_values[1]} of each subject",
                 "timing": "dlib's face detection runs once per image and its time is added to both dlib peers"},
        "floor": {"annotators_retest": retest(faces.gt, PAIR, [p for p in pairs if evaluated[p[0]] and evaluated[p[1]]]).to_dict()},
        "baselines": {"mean_pfl": {"pfl_abs_mean": float(np.abs(base).mean()), "pfl_signed_mean": float(base.mean())}},
        "skipped": skipped,
        "peers": {},
    }
    for name in args.peers:
        if name in runs:
            result["peers"][name] = summarize_peer(runs[name], faces, fold_masks, evaluated, pairs, args.threshold)
        else:
            result["peers"][name] = {"status": "skipped", "note": skipped.get(name, "not run")}
    print_table(result, console)
    write_json_atomic(args.results / "peers.json", result)
    write_text_atomic(args.results / "peers.md", markdown(result))
    console.print(f"wrote {args.results / 'peers.json'} and {args.results / 'peers.md'}")
    return result


if __name__ == "__main__":
    try:
        main()
    except CtdError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
