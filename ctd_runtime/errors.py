"""The one error type users see: says which file (and row) is wrong and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class CtdError(Exception):
    """A user-facing error; the CLI prints it without a traceback and exits non-zero."""

    def __init__(self, message: str, path: str | Path | None = None, row: int | None = None):
        self.path = None if path is None else Path(path)
        self.row = row
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
