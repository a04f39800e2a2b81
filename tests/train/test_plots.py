"""The CED chart reaches past the failure threshold, so failed images are on it, with the
threshold marked."""

from __future__ import annotations

import numpy as np
import pytest

from ctd_train.plots import ced_figure, ced_x_max, plot_ced


@pytest.mark.parametrize("errors, expected", [
    (np.full(20, 0.01), 0.2),                        # all well below: twice the threshold
    (np.linspace(0.0, 0.6, 101), 0.57),              # 55% fail: the 95th percentile
    (np.r_[np.zeros(5), np.full(95, 50.0)], 2.0),    # far off: at most 20x the threshold
    (np.r_[np.full(10, 0.05), np.nan, np.inf], 0.2),  # non-finite errors do not move the axis
])
def test_x_axis_end(errors, expected):
    assert ced_x_max({"a": errors}, 0.1) == pytest.approx(expected)


def test_the_chart_shows_the_failures_and_the_threshold(tmp_path):
    rng = np.random.default_rng(0)
    errors = rng.uniform(0.0, 0.3, 200)  # two thirds fail at 0.1
    fig = ced_figure({"run": errors, "other": errors / 2}, 0.1, "pfl")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo == 0 and hi == pytest.approx(np.percentile(np.r_[errors, errors / 2], 95))
    marked = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(marked) == 1 and marked[0].get_xdata()[0] == pytest.approx(0.1)
    curve = ax.get_lines()[0]
    x, y = curve.get_xdata(), curve.get_ydata()
    assert x[-1] == pytest.approx(hi) and y[-1] > 0.85  # the failed images are on the chart
    assert y[np.searchsorted(x, 0.1)] == pytest.approx(np.mean(errors <= 0.1), abs=0.02)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    fr = 100 * np.mean(errors > 0.1)
    assert legend[0].startswith("run (AUC ") and f"FR {fr:.1f}%" in legend[0]
    path = plot_ced({"run": errors}, 0.1, "pfl", tmp_path / "ced.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
