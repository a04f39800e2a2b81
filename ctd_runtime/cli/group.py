"""The root command group of `ctd`: typer's group with one help convention applied to every
command under it, whoever registered it.

A flag takes no value, so its help row shows no type: typer (0.29) labels every flag `<bool>`
(`--force <bool>`, even `--help <bool>`), which reads as if it wanted `--force true`.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


def _untyped_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""  # typer shows a metavar, when set, instead of the type
    return params


def _apply(command: Any, ctx: Any) -> None:
    _untyped_flags(command.get_params(ctx))
    for sub in getattr(command, "commands", {}).values():
        _apply(sub, ctx)


class CtdGroup(TyperGroup):
    """TyperGroup whose commands (and their subcommands) show flags without a type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _apply(command, ctx)
        return command
