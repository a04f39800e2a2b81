"""Plots of evaluation results (matplotlib's Agg canvas: no display, no global backend change)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ctd_runtime.atomic import atomic_path
from ctd_runtime.metrics import auc, ced_curve

UNIT_LABELS = {
    "pfl": "mean point error / true PFL",
    "px": "mean point error (source px)",
    "crop_px": "mean point error (crop px)",
    "mm": "mean point error (mm)",
}


def plot_ced(
    curves: Mapping[str, np.ndarray],
    threshold: float,
    unit: str,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """One CED curve (fraction of images with error <= x, x from 0 to the threshold) per entry of
    `curves` (label -> per-image errors in `unit`), AUC in the legend; written atomically as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, errors in curves.items():
        e = np.asarray(errors, dtype=np.float64)
        x, y = ced_curve(e, threshold)
        ax.plot(x, y, label=f"{label} (AUC {auc(e, threshold):.3f})", linewidth=1.6)
    ax.set_xlim(0.0, threshold)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(UNIT_LABELS.get(unit, f"error ({unit})"))
    ax.set_ylabel("fraction of images")
    ax.set_title(title or f"CED (threshold {threshold:g} {unit})")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
