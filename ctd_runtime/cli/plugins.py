"""Commands other packages add to `ctd`, found through the `ctd.commands` entry point group.

Each entry point is named after one top-level command and points at the `register(app)` that adds
it; a register adding several commands is named once per command. So when a package cannot be
imported (a station without the training stack), its command names are still known from the
installed metadata alone: each becomes a stand-in that `ctd --help` lists and that, when run,
says what to install and exits 2.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Callable

import typer

from ctd_runtime.errors import CtdError

GROUP = "ctd.commands"
# modules only `ctd[train]` installs; the station commands never import them
TRAINING_STACK = frozenset({"torch", "onnx", "onnxscript", "onnxconverter_common", "matplotlib"})


def stack_hint(missing: str) -> str:
    """The one line a station user sees when a command needs what `ctd[train]` installs."""
    return (f"this command needs the training stack ({missing} is not installed): "
            "pip install 'ctd[train]' (with torch==2.13.0 first on a CPU-only machine)")


def command_entry_points() -> dict[str, list[EntryPoint]]:
    """The group's entry points by target (`module:register`), in the order they are installed."""
    by_target: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=GROUP):
        by_target.setdefault(ep.value, []).append(ep)
    return by_target


def _missing_module(error: ModuleNotFoundError, ep: EntryPoint) -> str | None:
    """The missing module's name when it is the training stack or the whole plug-in package
    (what a station lacks); None for anything else (a missing submodule of an installed package
    is a bug to show, not to hide)."""
    name = error.name or ""
    root = name.split(".")[0]
    if root in TRAINING_STACK or name == ep.module.split(".")[0]:
        return root
    return None


def _stand_in(missing: str) -> Callable[[], None]:
    def command() -> None:
        raise CtdError(stack_hint(missing))

    return command


def add_stand_ins(app: typer.Typer, names: list[str], missing: str) -> None:
    """Commands `names` that only say what to install (any arguments are accepted)."""
    for name in names:
        app.command(
            name,
            help=f"Needs the training stack: pip install 'ctd\\[train]' ({missing} is not installed here).",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_stand_in(missing))


def add_plugin_commands(app: typer.Typer, station_commands: dict[str, Callable[..., None]] | None = None) -> None:
    """Call every installed `ctd.commands` register once; stand-ins where its package is absent,
    except for the commands the station has a version of its own (`station_commands` by name:
    `ctd evaluate MODEL.onnx`), which take their place."""
    own = station_commands or {}
    for eps in command_entry_points().values():
        try:
            register = eps[0].load()
        except ModuleNotFoundError as e:
            missing = _missing_module(e, eps[0])
            if missing is None:
                raise
            names = [ep.name for ep in eps]
            for name in (n for n in names if n in own):
                app.command(name)(own[name])
            add_stand_ins(app, [n for n in names if n not in own], missing)
            continue
        register(app)
