"""Training-step speed of the CPU settings (bfloat16 autocast, channels_last) on this machine.

bfloat16 pays only where the CPU computes in it (AVX-512 BF16 or AMX); elsewhere torch emulates it
and the step gets slower. This measures the recipe's model (HSE MobileNet teacher, skip head,
256 px, batch 2) on real IMM crops: every setting builds its own model from the same seed, the
settings take turns step by step (round r times setting s, so a slow spell on a shared machine
hits them all), and each reports the median and spread of its step times.

    python benchmarks/train_settings.py [--steps 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _results import publish
from _variants import DEFAULT_DATA, DEFAULT_WEIGHTS

SETTINGS = {  # name: (bf16, channels_last)
    "float32": (False, False),
    "float32 + channels_last": (False, True),
    "bf16": (True, False),
    "bf16 + channels_last": (True, True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--teacher", default="hse-mobilenet-vggface2")
    p.add_argument("--teacher-weights", type=Path, default=None,
                   help="default: ../shared's HSE MobileNet weights for that teacher, else the teacher's own")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=12, help="timed steps per setting and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_settings")
    return p.parse_args(argv)


def _setup(args: argparse.Namespace, bf16: bool, channels_last: bool, out: Path):
    from ctd_train.config import TrainConfig
    from ctd_train.trainer import build_optimizer, prepare

    weights = args.teacher_weights or (DEFAULT_WEIGHTS if args.teacher == "hse-mobilenet-vggface2" else None)
    config = TrainConfig(data=str(args.data), out=str(out), teacher=args.teacher,
                         teacher_weights=None if weights is None else str(weights),
                         input_size=args.input_size, bf16=bf16, channels_last=channels_last, seed=0,
                         val_subjects=1, test_subjects=1)
    setup = prepare(config)
    if channels_last:
        import torch

        setup.method.to(memory_format=torch.channels_last)
    return setup, build_optimizer(setup)


def _step(setup, optimizer, batch) -> float:
    """One training step as the trainer takes it (ctd_train.trainer.train_step); seconds."""
    import torch

    from ctd_train.losses import landmark_loss_weights
    from ctd_train.trainer import train_step

    weights = landmark_loss_weights(setup.schema.num_landmarks, setup.schema.pfl_pair, setup.config.pfl_weight)
    t0 = time.perf_counter()
    train_step(setup, optimizer, batch, torch.device("cpu"), weights)
    return time.perf_counter() - t0


def measure(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    import torch

    from ctd_runtime.machine import usable_cores

    torch.set_num_threads(args.threads or usable_cores())
    runs = {name: _setup(args, *flags, work / f"s{i}") for i, (name, flags) in enumerate(SETTINGS.items())}
    first = next(iter(runs.values()))[0]
    batches = [torch.utils.data.default_collate([first.train_set[2 * j], first.train_set[2 * j + 1]])
               for j in range(args.steps)]
    for setup, optimizer in runs.values():
        setup.method.train()
        for j in range(args.warmup):
            _step(setup, optimizer, batches[j % len(batches)])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for j in range(args.steps):
            for name, (setup, optimizer) in runs.items():
                times[name].append(_step(setup, optimizer, batches[j]))
    base = statistics.median(times["float32"])
    out = {}
    for name, t in times.items():
        med = statistics.median(t)
        q = statistics.quantiles(t, n=4)
        out[name] = {"median_s": med, "q1_s": q[0], "q3_s": q[2], "images_per_s": 2 / med,
                     "vs_float32": base / med, "steps": len(t)}
    return out


def markdown(meta: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    lines = [f"# training-step speed of the CPU settings ({meta['machine']['cpu']}, {meta['machine']['cores']} cores)", "",
             f"- CPU bfloat16 support: {meta['machine']['cpu_bf16']}; the auto default trains in bfloat16: "
             f"{meta['bf16_auto']}",
             f"- the recipe's model, batch 2, 256 px; {meta['rounds']} rounds x {meta['steps']} steps per setting, "
             "settings interleaved step by step; median (interquartile range) of the step times", "",
             "| setting | step ms | images/s | speed vs float32 |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {1e3 * r['median_s']:.0f} ({1e3 * r['q1_s']:.0f}-{1e3 * r['q3_s']:.0f}) | "
                     f"{r['images_per_s']:.2f} | {r['vs_float32']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from ctd_runtime.machine import describe_machine
    from ctd_train.config import auto_bf16

    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, Path(tmp))
    meta = {"machine": describe_machine(), "bf16_auto": auto_bf16("cpu"),
            "steps": args.steps, "rounds": args.rounds, "warmup": args.warmup}
    publish(args.out, {"meta": meta, "rows": rows}, markdown(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
