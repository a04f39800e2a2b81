"""What `ctd export` shows while it works: every step's start and end with its time, and a bar for
the long loops (INT8 calibration), on a terminal and in a pipe or log file alike.

The export functions only call two plain callables, `log(line)` and `progress(label, done,
total)`; `ConsoleProgress` is the CLI's implementation. On a terminal the loop is a rich progress
bar; elsewhere (a pipe, CI, `nohup`) a rich Live display would print nothing until the end, so
the loop prints one plain line per tenth of the work instead, each flushed as it is written.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

from rich.console import Console

Log = Callable[[str], None]
ProgressFn = Callable[[str, int, int], None]


@contextlib.contextmanager
def timed_step(log: Log | None, name: str, what: str) -> Iterator[None]:
    """`name: what ...` before the block, `name: done in S s` (or `failed after S s`) after it."""
    if log is None:
        yield
        return
    log(f"{name}: {what} ...")
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        log(f"{name}: failed after {time.perf_counter() - t0:.1f} s")
        raise
    log(f"{name}: done in {time.perf_counter() - t0:.1f} s")


class ConsoleProgress:
    """`log` and `progress` for a rich Console: a bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Console, lines_per_loop: int = 10):
        self.console = console
        self.lines_per_loop = max(1, lines_per_loop)
        self._bar: Any = None
        self._task: Any = None
        self._label = ""
        self._finished = ""
        self._next_line = 0
        self._t0 = 0.0

    def log(self, line: str) -> None:
        self._close_bar()
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def progress(self, label: str, done: int, total: int) -> None:
        """Item `done` of `total` of the loop `label` (0 starts it, total ends it)."""
        total = max(int(total), 1)
        done = min(max(int(done), 0), total)
        if label == self._finished and done >= total:
            return  # the loop's end, told twice
        if label != self._label or done == 0:
            self._start(label, total)
        if self.console.is_terminal:
            self._bar.update(self._task, completed=done)
        elif done >= self._next_line or done >= total:
            elapsed = time.perf_counter() - self._t0
            self.console.print(f"  {label}: {done}/{total} ({100 * done / total:.0f}%), {elapsed:.0f} s",
                               highlight=False, markup=False)
            self._next_line = done + max(1, -(-total // self.lines_per_loop))
        if done >= total:
            self._close_bar()
            self._label, self._finished = "", label

    def _start(self, label: str, total: int) -> None:
        self._close_bar()
        self._label, self._finished, self._next_line, self._t0 = label, "", 0, time.perf_counter()
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn(f"  {label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=self.console, transient=False)
            self._task = self._bar.add_task(label, total=total)
            self._bar.start()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
