"""Compare a loaded teacher with the reference outputs of its original implementation
(``shared/teachers/<name>/golden.npz``, README sections 1.5/1.6 and 2.5/2.6).

Each teacher has its own golden keys; its registry entry's ``golden`` (a tuple of ``GoldenOutput``)
says how each key is computed from the PyTorch network and how close a correct port gets (max abs
diff). The golden ``inputs`` are uint8 RGB NHWC crops; they go through the teacher's own
``input_spec.normalization`` (which starts from OpenCV's BGR order), so the preprocessing is part
of what is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from ctd_runtime.errors import CtdError
from ctd_train.teachers._base import Teacher, TeacherNetwork

# (network, its forward output dict, normalised NCHW input) -> tensor in the golden layout
Derive = Callable[[TeacherNetwork, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GoldenOutput:
    key: str            # key in golden.npz
    tolerance: float    # max abs diff a correct float32 port reaches (README's suggested threshold)
    derive: Derive
    what: str


class GoldenCheck(NamedTuple):
    """One compared output: (output name, max abs diff, tolerance, ok)."""

    name: str
    max_abs_diff: float
    tolerance: float
    ok: bool


def golden_outputs_for(name: str) -> tuple[GoldenOutput, ...]:
    """The golden outputs of teacher `name` (its registry entry's); CtdError when it has none."""
    from ctd_train.teachers._registry import list_teachers, teacher_entry

    specs = teacher_entry(name).golden
    if not specs:
        raise CtdError(
            f"no golden reference is known for teacher {name!r}; golden files exist for "
            f"{', '.join(e.name for e in list_teachers() if e.golden)}"
        )
    return specs


def golden_inputs(teacher: Teacher, golden: dict[str, np.ndarray], path: Path) -> torch.Tensor:
    """The golden uint8 RGB NHWC crops through the teacher's normalisation -> float32 NCHW."""
    if "inputs" not in golden:
        raise CtdError("golden file has no 'inputs'", path)
    imgs = golden["inputs"]
    size = teacher.input_spec.size
    if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[1:] != (size, size, 3):
        raise CtdError(
            f"golden inputs are {imgs.dtype} {list(imgs.shape)}, teacher {teacher.name} expects uint8 "
            f"[N, {size}, {size}, 3] RGB", path
        )
    bgr = np.ascontiguousarray(imgs[..., ::-1])  # Normalization.apply starts from OpenCV's BGR
    return torch.from_numpy(teacher.input_spec.normalization.apply(bgr))


def compare_golden(teacher: Teacher, golden_path: str | Path) -> list[GoldenCheck]:
    """Run `teacher` (CPU, float32, eval mode) on the golden inputs and compare every known output.

    Returns one GoldenCheck (name, max abs diff, tolerance, ok) per golden output of this teacher,
    in a fixed order. CtdError when the file is missing, lacks a key or a shape differs."""
    path = Path(golden_path)
    specs = golden_outputs_for(teacher.name)
    if not path.is_file():
        raise CtdError("golden file not found", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            golden = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise CtdError(f"cannot read the golden file: {e}", path) from None
    missing = [s.key for s in specs if s.key not in golden]
    if missing:
        raise CtdError(
            f"golden file lacks {missing[0]!r} ({len(missing)} of the {len(specs)} outputs of teacher "
            f"{teacher.name}); is it the golden file of another teacher? it has {sorted(golden)}", path
        )
    x = golden_inputs(teacher, golden, path)
    net = teacher.frozen().to(device="cpu", dtype=torch.float32)
    results: list[GoldenCheck] = []
    with torch.inference_mode():
        out = dict(net(x))
        for s in specs:
            got = s.derive(net, out, x).detach().to(torch.float64).numpy()
            want = golden[s.key].astype(np.float64)
            if got.shape != want.shape:
                raise CtdError(
                    f"{s.key} ({s.what}): the teacher gives shape {list(got.shape)}, the golden file has "
                    f"{list(want.shape)}", path
                )
            diff = float(np.max(np.abs(got - want))) if want.size else 0.0
            ok = bool(np.isfinite(diff) and diff <= s.tolerance)
            results.append(GoldenCheck(s.key, diff, s.tolerance, ok))
    return results
