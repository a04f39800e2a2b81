"""The `ctd` command. Thin: parse options, call a function a test can also call, print with rich.

The station commands live here; the other packages add theirs through the `ctd.commands` entry
points (see `plugins`) and import torch only inside their command bodies, so `ctd --help` and the
station commands work on a runtime-only install.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from ctd_runtime import __version__
from ctd_runtime.cli.group import CtdGroup
from ctd_runtime.errors import CtdError

console = Console(stderr=True)


def table_console(min_width: int = 140) -> Console:
    """stdout console; wider than rich's 80-column default when not writing to a terminal, so
    tables in logs and CI output keep their rows on one line."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=max(out.width, min_width))
    return out


def _version_callback(value: bool) -> None:
    if value:
        print(f"ctd {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="ctd",
        cls=CtdGroup,
        help="Facial anatomical landmarks for PFL measurement: train a model, export it, measure on the station.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """ctd: cross-task distilled facial landmark detection for the edge."""

    from ctd_runtime.cli import bench, engine, infer, station_eval
    from ctd_runtime.cli.plugins import add_plugin_commands

    add_plugin_commands(app, {"evaluate": station_eval.evaluate_cmd})
    engine.register(app)
    infer.register(app)
    bench.register(app)
    return app


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM ends a command like Ctrl-C does (exit 143), through every `finally`, so temporary
    files are removed (ctd_runtime.atomic); a command that serves until stopped installs its own.
    The previous handler is back afterwards (main() called from Python, e.g. by tests)."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: CtdError becomes a one-line red message and exit code 2.

    Click's standalone mode handles usage errors (exit 2 with its own message) and exit codes;
    only our own errors travel out of it.
    """
    app = build_app()
    try:
        with _exit_on_sigterm():
            app(args=argv, prog_name="ctd")
    except SystemExit as e:  # click ends every standalone run this way; success returns normally
        if e.code not in (0, None):
            raise
    except CtdError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as e:
        from ctd_runtime.cli.plugins import TRAINING_STACK, stack_hint

        root = (e.name or "").split(".")[0]
        if root not in TRAINING_STACK:
            raise
        console.print(f"[bold red]error:[/] {escape(stack_hint(root))}", highlight=False, soft_wrap=True)
        sys.exit(2)
