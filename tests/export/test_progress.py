"""What `ctd export` shows while it works: step lines with times, and the calibration's progress
as a bar on a terminal or one flushed line per tenth elsewhere."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ctd_export.progress import ConsoleProgress, timed_step


def test_timed_step_lines():
    lines: list[str] = []
    with timed_step(lines.append, "fp16", "FP16 variant"):
        pass
    with pytest.raises(ValueError):
        with timed_step(lines.append, "int8", "INT8 variant"):
            raise ValueError("calibration failed")
    assert lines[0] == "fp16: FP16 variant ..." and lines[1].startswith("fp16: done in ")
    assert lines[2] == "int8: INT8 variant ..." and lines[3].startswith("int8: failed after ")


def test_plain_lines_when_not_a_terminal():
    buf = io.StringIO()
    shown = ConsoleProgress(Console(file=buf, width=120))
    shown.log("int8: INT8 variant ...")
    for i in range(65):
        shown.progress("int8 calibration", i, 64)
    shown.progress("int8 calibration", 64, 64)  # a repeated end prints nothing more
    shown.progress("int8 calibration", 0, 3)  # a new loop of the same name starts again
    shown.progress("int8 calibration", 3, 3)
    lines = buf.getvalue().splitlines()
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines[1:]]
    assert counts == [0, 7, 14, 21, 28, 35, 42, 49, 56, 63, 64, 0, 3], lines  # one line per tenth, and the end
    assert all(line.endswith(" s") and "/64 (" in line for line in lines[1:-2])


def test_a_bar_on_a_terminal():
    buf = io.StringIO()
    shown = ConsoleProgress(Console(file=buf, width=100, force_terminal=True))
    for i in range(5):
        shown.progress("int8 calibration", i, 4)
    shown.log("int8: done in 1.0 s")
    text = buf.getvalue()
    assert "int8 calibration" in text and "4/4" in text and "━" in text
    assert text.rstrip().endswith("int8: done in 1.0 s")
