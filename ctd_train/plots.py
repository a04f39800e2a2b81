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


def ced_x_max(curves: Mapping[str, np.ndarray], threshold: float, percentile: float = 95.0,
              at_least: float = 2.0, at_most: float = 20.0) -> float:
    """Right end of a CED chart's x axis: past the threshold, so the failed images are on it too
    (55% of them in the README run): the 95th percentile of every curve's finite errors, at
    least 2x and at most 20x the threshold (beyond that the curve below it would be squashed)."""
    finite = [np.asarray(e, np.float64)[np.isfinite(e)] for e in curves.values()]
    finite = [e for e in finite if e.size]
    p = float(np.percentile(np.concatenate(finite), percentile)) if finite else 0.0
    return float(min(max(p, at_least * threshold), at_most * threshold))


def plot_ced(
    curves: Mapping[str, np.ndarray],
    threshold: float,
    unit: str,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """`ced_figure` written atomically as PNG."""
    fig = ced_figure(curves, threshold, unit, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def ced_figure(curves: Mapping[str, np.ndarray], threshold: float, unit: str, title: str | None = None):
    """One CED curve (fraction of images with error <= x) per entry of `curves` (label -> per-image
    errors in `unit`), x from 0 to past the threshold (`ced_x_max`), the threshold marked; AUC
    (to the threshold) and FR in the legend. A matplotlib Figure on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x_max = ced_x_max(curves, threshold)
    for label, errors in curves.items():
        e = np.asarray(errors, dtype=np.float64)
        x, y = ced_curve(e, x_max, num=401)
        fr = float(np.mean(~(e <= threshold))) if e.size else 0.0  # NaN errors count as failures
        ax.plot(x, y, label=f"{label} (AUC {auc(e, threshold):.3f}, FR {100 * fr:.1f}%)", linewidth=1.6)
    ax.axvline(threshold, color="0.35", linestyle="--", linewidth=1.0)
    ax.annotate(f"threshold {threshold:g}", xy=(threshold, 0.97), xytext=(4, 0), textcoords="offset points",
                fontsize=8, color="0.35", va="top")  # top left of the line: the legend sits bottom right
    ax.set_xlim(0.0, x_max)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(UNIT_LABELS.get(unit, f"error ({unit})"))
    ax.set_ylabel("fraction of images")
    ax.set_title(title or f"CED (AUC and FR at threshold {threshold:g} {unit})")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return fig
