"""The root app's plug-in commands (`ctd.commands` entry points): each register adds exactly the
commands its entry points name; a package that cannot be imported leaves stand-ins that say what
to install; any other import failure is shown, not hidden."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
import typer
from typer.testing import CliRunner

from ctd_runtime.cli import build_app, main, plugins


def _command_names(app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _base_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """root"""

    return app


def test_each_register_adds_the_commands_its_entry_points_name():
    targets = plugins.command_entry_points()
    assert targets, "no ctd.commands entry points: is ctd installed (pip install -e .)?"
    declared: set[str] = set()
    for eps in targets.values():
        app = _base_app()
        eps[0].load()(app)
        names = {ep.name for ep in eps}
        assert _command_names(app) == names
        declared |= names
    assert {"train", "evaluate", "export", "teacher", "data"} <= declared
    assert _command_names(build_app()) == declared | {"build-engine", "infer", "bench"}


def _fake_entry_points(monkeypatch, value: str, names: tuple[str, ...]) -> None:
    eps = [EntryPoint(name=n, value=value, group=plugins.GROUP) for n in names]
    monkeypatch.setattr(plugins, "entry_points", lambda group: eps if group == plugins.GROUP else [])


def test_absent_package_leaves_stand_ins_that_say_what_to_install(monkeypatch, capsys):
    _fake_entry_points(monkeypatch, "ctd_absent_plugin.cli:register", ("ghost", "phantom"))
    r = CliRunner().invoke(build_app(), ["--help"])
    assert r.exit_code == 0, r.output
    assert "ghost" in r.output and "phantom" in r.output and "ctd[train]" in r.output
    with pytest.raises(SystemExit) as e:
        main(["ghost", "--any", "option", "value"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs the training stack (ctd_absent_plugin is not installed)" in err
    assert "pip install 'ctd[train]'" in err


def test_a_missing_module_inside_an_installed_package_is_not_hidden(monkeypatch):
    _fake_entry_points(monkeypatch, "ctd_runtime.no_such_module:register", ("ghost",))
    with pytest.raises(ModuleNotFoundError, match="ctd_runtime.no_such_module"):
        build_app()
