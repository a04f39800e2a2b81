"""The `ctd` command. Thin: parse options, call a function a test can also call, print with rich.

Training and export code (torch) is imported lazily inside those subcommands, so `ctd --help`
and the station commands work on a runtime-only install.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from ctd_runtime import __version__
from ctd_runtime.errors import CtdError

console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        print(f"ctd {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="ctd",
        help="Facial anatomical landmarks for PFL measurement: train, evaluate, export, infer, bench.",
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

    from ctd_runtime.cli import data, export, teacher, train

    for module in (data, teacher, train, export):
        module.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Console entry point: CtdError becomes a one-line red message and exit code 2."""
    app = build_app()
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc != 0:  # typer.Exit(code) is returned, not raised, here
            sys.exit(rc)
    except CtdError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors etc.
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            console.print("aborted")
            sys.exit(1)
        raise
