"""`ctd export` in a child process that stops at a named point and waits there to be killed.

    CTD_TEST_STOP_AT=parity|int8 CTD_TEST_MARKER=FILE python -m tests.bad_input._killable_export export RUN --out DIR

parity: while the parity gate runs on the temporary model.onnx; int8: after the first INT8
calibration sample (the quantiser's work folder exists). FILE is written when it gets there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest


def _wait_to_be_killed(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)  # the test kills the process long before


def _stop_at(mp: pytest.MonkeyPatch, point: str, marker: str) -> None:
    if point == "parity":
        import ctd_export.parity as parity

        mp.setattr(parity, "check_parity", lambda *a, **k: _wait_to_be_killed(marker))
    elif point == "int8":
        from ctd_export.calibration import FusedCalibrationReader

        real = FusedCalibrationReader.get_next

        def get_next(self):
            if self._given == 1:
                _wait_to_be_killed(marker)
            return real(self)

        mp.setattr(FusedCalibrationReader, "get_next", get_next)
    else:
        raise SystemExit(f"unknown stop point {point!r}")


def main() -> None:
    from ctd_runtime.cli import main as ctd
    from tests.train._tiny_training import tiny_teachers

    mp = pytest.MonkeyPatch()
    tiny_teachers(mp)
    _stop_at(mp, os.environ["CTD_TEST_STOP_AT"], os.environ["CTD_TEST_MARKER"])
    ctd(sys.argv[1:])


if __name__ == "__main__":
    main()
