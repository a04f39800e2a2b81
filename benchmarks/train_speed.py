"""Training images per second on this CPU for each teacher backbone (and the from-scratch HG).

Each row is a real `ctd train` run (`ctd_train.trainer.train`, default settings: bf16 autocast where
the CPU computes in bfloat16 (auto), channels_last, batch 2, 256x256) on the IMM faces for a few epochs; the number is the median of
the per-epoch `images_per_s` in metrics.jsonl after the first epoch. Teachers whose weights are
not on this machine (resnet50-vggface2) run with random weights in the same architecture, written
in the original pickle format, and the table says so.

    python benchmarks/train_speed.py [--epochs 3] [--train-images 24]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ctd_runtime.atomic import write_json_atomic
from ctd_runtime.machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_DATA = SHARED / "data" / "imm-face"
REAL_WEIGHTS = {
    "dlib-resnet29": SHARED / "teachers" / "dlib-resnet29" / "dlib_face_recognition_resnet_model_v1.dat",
    "hse-mobilenet-vggface2": SHARED / "teachers" / "hse-mobilenet-vggface2" / "faceres-deep.json",
}
ROWS = [  # (teacher, method)
    ("hse-mobilenet-vggface2", "ctd-ed"),
    ("hse-mobilenet-vggface2", "ctd-com"),
    ("dlib-resnet29", "ctd-ed"),
    ("resnet50-vggface2", "ctd-ed"),
    ("resnet50-vggface2", "ctd-com"),
    (None, "hg"),
]


def random_vggface2_pickle(folder: Path) -> Path:
    """A resnet50_ft_weight.pkl-format file with random weights (the real one is not here)."""
    from ctd_train.teachers import vggface2_resnet as v

    state = {k: t.numpy() for k, t in v.original_state_dict(v.build_network()).items()
             if not k.endswith("num_batches_tracked")}  # the Caffe-converted originals have none
    path = folder / "resnet50_random_weight.pkl"
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=4)  # protocol 2 would need _codecs, which the safe loader refuses
    return path


def measure(teacher: str | None, method: str, weights: Path | None, data: Path, out: Path,
            epochs: int, train_images: int) -> dict[str, Any]:
    from ctd_train.config import TrainConfig
    from ctd_train.methods import MethodConfig
    from ctd_train.trainer import train

    config = TrainConfig(
        data=str(data), out=str(out), teacher=teacher or "hse-mobilenet-vggface2",
        teacher_weights=None if weights is None else str(weights), method=MethodConfig(name=method),
        epochs=epochs, train_images=train_images, val_subjects=1, test_subjects=1, lr=1e-4,
    )
    run_dir = train(config, progress=False, evaluate_test=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_s"] for r in records[1:]] or [records[0]["images_per_s"]]
    saved = json.loads((run_dir / "config.json").read_text())
    return {"teacher": teacher or "-", "method": method, "images_per_s": statistics.median(speeds),
            "epochs_timed": len(speeds), "bf16": saved["bf16"], "device": saved["device"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=24)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_speed.json")
    args = p.parse_args(argv)
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for i, (teacher, method) in enumerate(ROWS):
            weights = REAL_WEIGHTS.get(teacher or "")
            note = "real weights"
            if teacher == "resnet50-vggface2":
                weights, note = random_vggface2_pickle(tmp_path), "random weights, same architecture"
            elif teacher is None:
                weights, note = None, "from scratch"
            elif weights is None or not weights.exists():
                console.print(f"skipping {teacher}: weights not found")
                continue
            row = measure(teacher, method, weights, args.data, tmp_path / f"run{i}", args.epochs, args.train_images)
            row["weights"] = note
            rows.append(row)
            console.print(f"{row['teacher']} {method}: {row['images_per_s']:.1f} img/s")
    import torch

    result = {"benchmark": "train_speed", "machine": describe_machine(torch=torch.__version__,
              torch_threads=torch.get_num_threads()), "settings": {"batch_size": 2, "input_size": 256,
              "bf16": sorted({r["bf16"] for r in rows}), "channels_last": True, "train_images": args.train_images}, "rows": rows}
    table = Table("teacher", "method", "train images/s", "weights",
                  title=f"training speed, {result['machine']['cpu']} ({result['machine']['cores']} cores)")
    for r in rows:
        table.add_row(r["teacher"], r["method"], f"{r['images_per_s']:.1f}", r["weights"])
    console.print(table)
    write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
