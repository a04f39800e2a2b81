"""The contenders of `ctd bench`: what is timed side by side, found from the given models and runs.

A contender is a name and a way to open a backend (`ctd_runtime.backends`: `run(image, crop)`),
so the Landmarker runs every contender through the same face-box passes. The runtime's own
contenders come from a model file's siblings (`ctd_runtime.artifacts`): ONNX Runtime on
model.onnx / model.fp16.onnx / model.int8.onnx, TensorRT on model.plan / model.int8.plan, ONNX
Runtime's CUDA provider. Contenders of a training run (the PyTorch eager baseline, PyTorch CUDA)
come from other packages through the `ctd.bench_contenders` entry point group, so ctd_runtime
never imports torch: each entry point is a function `(run_dir, BenchContext) -> ContenderSet`.
A backend may expose `stage_seconds` (a dict it adds its sub-stage times to, e.g. "decode"),
which the harness reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from ctd_runtime.artifacts import ONNX_PRECISIONS, onnx_variant, plan_path
from ctd_runtime.backends import BaseBackend, create_backend
from ctd_runtime.errors import CtdError

GROUP = "ctd.bench_contenders"
CUDA_PROVIDER = "CUDAExecutionProvider"
MODEL_SUFFIXES = (".onnx", ".plan", ".engine")


@dataclass(frozen=True)
class BenchContext:
    """What a contender factory needs to know: threads (ORT intra-op, torch), the device wanted."""

    threads: int
    gpu: bool = True  # also offer the GPU contenders where a GPU is there


@dataclass
class Contender:
    """One thing timed: `open()` gives an opened backend. `baseline`: ratios are against it;
    `reference`: the FP32 landmarks the others are compared with."""

    name: str
    open: Callable[[], BaseBackend]
    kind: str
    precision: str = "fp32"
    device: str = "cpu"
    baseline: bool = False
    reference: bool = False
    model: Path | None = None


@dataclass
class ContenderSet:
    """Contenders found, and those skipped with the reason (printed and in the JSON)."""

    contenders: list[Contender] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def extend(self, other: "ContenderSet") -> None:
        self.contenders.extend(other.contenders)
        self.skipped.update(other.skipped)


def resolve_target(path: str | Path) -> tuple[str, Path]:
    """("model", model file) for a .onnx/.plan file or a folder holding model.onnx (an export);
    ("run", folder) for any other folder (a training run, for the plug-in contenders)."""
    p = Path(path)
    if not p.exists():
        raise CtdError("model or run folder not found", path=p)
    if p.is_file():
        if p.suffix.lower() not in MODEL_SUFFIXES:
            raise CtdError(f"not a model file (expected {', '.join(MODEL_SUFFIXES)}) or a run folder", path=p)
        return "model", p
    if (p / "model.onnx").is_file():
        return "model", p / "model.onnx"
    return "run", p


def _ort(path: Path, threads: int, providers: list[str] | None = None) -> Callable[[], BaseBackend]:
    return lambda: create_backend(path, "onnxruntime", threads=threads, providers=providers).open()


def runtime_contenders(model: Path, context: BenchContext, label: str = "") -> ContenderSet:
    """ONNX Runtime on each precision found beside `model`, TensorRT on the plans, ORT CUDA."""
    out = ContenderSet()
    base = onnx_variant(model, "fp32") if model.suffix == ".onnx" else model.with_suffix(".onnx")
    for precision in ONNX_PRECISIONS:
        path = onnx_variant(base, precision)
        name = f"{label}onnxruntime {precision}"
        if path.is_file():
            out.contenders.append(Contender(name, _ort(path, context.threads), "onnxruntime", precision,
                                            reference=precision == "fp32", model=path))
        else:
            out.skipped[name] = f"{path.name} not found"
    _add_tensorrt(out, base, label)
    if context.gpu:
        _add_ort_cuda(out, base, context, label)
    return out


def _add_tensorrt(out: ContenderSet, base: Path, label: str) -> None:
    plans = [(plan_path(base), "fp32/fp16"), (plan_path(onnx_variant(base, "int8")), "int8")]
    for plan, precision in plans:
        name = f"{label}tensorrt {precision}"
        if not plan.is_file():
            out.skipped[name] = f"{plan.name} not found"
            continue
        try:
            import tensorrt  # noqa: F401 - only whether it imports
        except ImportError:
            out.skipped[name] = "tensorrt does not import (pip install 'ctd[tensorrt]' on a machine with an NVIDIA GPU)"
            continue
        out.contenders.append(Contender(name, lambda p=plan: create_backend(p, "tensorrt").open(), "tensorrt",
                                        precision, "cuda", model=plan))


def _add_ort_cuda(out: ContenderSet, base: Path, context: BenchContext, label: str) -> None:
    import onnxruntime as ort

    name = f"{label}onnxruntime cuda fp32"
    if CUDA_PROVIDER not in ort.get_available_providers():
        out.skipped[name] = "this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu on a GPU machine)"
    elif base.is_file():
        out.contenders.append(Contender(name, _ort(base, context.threads, [CUDA_PROVIDER]), "onnxruntime", "fp32",
                                        "cuda", model=base))


def plugin_contenders(run_dir: Path, context: BenchContext, label: str = "") -> ContenderSet:
    """The contenders other packages make from a training run (entry points of GROUP); a plug-in
    that cannot import (a station without torch) is reported as skipped, not an error."""
    out = ContenderSet()
    eps = list(entry_points(group=GROUP))
    if not eps:
        out.skipped[f"{label}pytorch eager"] = (f"no {GROUP} plug-in is installed (pip install -e '.[train]' "
                                                "registers the PyTorch contenders)")
    for ep in eps:
        try:
            factory = ep.load()
        except ImportError as e:
            out.skipped[f"{label}{ep.name}"] = f"cannot import {ep.value}: {e}"
            continue
        out.extend(_labelled(factory(run_dir, context), label))
    return out


def _labelled(found: ContenderSet, label: str) -> ContenderSet:
    """The set with `label` before every name (several targets in one run)."""
    for c in found.contenders:
        c.name = label + c.name
    return ContenderSet(found.contenders, {label + k: v for k, v in found.skipped.items()})


def find_contenders(targets: list[str | Path], context: BenchContext,
                    extra: list[Callable[[Path, BenchContext], ContenderSet]] | None = None) -> ContenderSet:
    """Every contender of the given models and runs. `extra`: factories called for each run in
    place of the entry points (benchmarks/latency.py passes the PyTorch factory directly)."""
    resolved = [resolve_target(t) for t in targets]
    out = ContenderSet()
    many = len(resolved) > 1
    for kind, path in resolved:
        label = f"{path.parent.name if kind == 'model' else path.name}: " if many else ""
        if kind == "model":
            out.extend(runtime_contenders(path, context, label))
        elif extra is not None:
            if not extra:
                out.skipped[f"{label}pytorch eager"] = f"{path}: a run folder, but no run contender (torch missing?)"
            for factory in extra:
                out.extend(_labelled(factory(path, context), label))
        else:
            out.extend(plugin_contenders(path, context, label))
    _check_unique(out.contenders)
    return out


def _check_unique(contenders: list[Contender]) -> None:
    names = [c.name for c in contenders]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise CtdError(f"contender {dup!r} given twice (the same model twice?)")
