"""Running `ctd` in-process for tests: its exit code and output, as a user's shell would see them."""

from __future__ import annotations

from ctd_runtime.cli import main


def run_ctd(args: list, capsys, fold_stderr: bool = False) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `ctd args`; `fold_stderr` joins stderr's wrapped lines
    (rich wraps long messages) so a test can match a whole message."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split()) if fold_stderr else out.err
