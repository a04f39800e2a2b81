"""`ctd teacher` commands: list the teachers, check a loader (optionally against golden outputs).

torch and ctd_train are imported inside the commands: the runtime package stays torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from ctd_runtime.cli import table_console

if TYPE_CHECKING:  # pragma: no cover
    from ctd_train.teachers import Teacher
    from ctd_train.teachers._registry import TeacherEntry

# module-level functions that find a teacher's weights when none are given (called with None,
# return a Path or raise CtdError); each family module has one of these
_FINDERS = ("resolve_weights", "find_dlib_weights", "find_weights")


def weights_found(entry: "TeacherEntry") -> tuple[bool, str]:
    """Whether `entry`'s weights are found on this machine now (without loading them)."""
    from ctd_runtime.errors import CtdError

    module = sys.modules.get(entry.loader.__module__)
    for fname in _FINDERS:
        fn = getattr(module, fname, None)
        if callable(fn):
            try:
                path = fn(None)
            except CtdError:
                return False, "not found"
            if path is None:
                return False, "not found"
            return True, str(path)
    return False, "unknown (no finder)"


def describe_teacher(teacher: "Teacher", size: int = 256) -> dict[str, Any]:
    """Input spec, parameter counts and output shapes for a `size` x `size` input."""
    out = teacher.output_shapes(size)
    norm = teacher.input_spec.normalization
    return {
        "name": teacher.name,
        "weights": None if teacher.weights_path is None else str(teacher.weights_path),
        "input_size": teacher.input_spec.size,
        "channel_order": norm.channel_order,
        "mean": list(norm.mean),
        "scale": list(norm.scale),
        "parameters": teacher.parameter_count(),
        "encoder_parameters": sum(p.numel() for p in teacher.network.encoder.parameters()),
        "probe_size": size,
        "feature_map": out["features"],
        "has_classifier": teacher.has_classifier,
        "logits": out.get("logits"),
        "embedding": out.get("embedding"),
    }


def _fmt_floats(v: list[float]) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in v) + ")"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    teacher_app = typer.Typer(
        help="Teacher networks: list them, check that one loads (and matches its golden outputs).",
        no_args_is_help=True,
    )

    @teacher_app.command("list")
    def list_cmd() -> None:
        """The registered teachers, their licences, where the weights come from and whether they are here."""
        from ctd_train.teachers import list_teachers

        table = Table(title="teachers", show_lines=True)
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("classifier", no_wrap=True)
        for col in ("licence", "weights come from", "found here"):
            table.add_column(col, overflow="fold")
        for e in list_teachers():
            found, where = weights_found(e)
            table.add_row(
                e.name,
                "yes" if e.has_classifier else "no",
                e.licence,
                e.weights_source,
                f"[green]yes[/]: {where}" if found else f"[yellow]no[/] ({where})",
            )
        table_console().print(table)

    @teacher_app.command("check")
    def check_cmd(
        name: str = typer.Argument(..., help="Teacher name (see `ctd teacher list`)."),
        weights: Optional[Path] = typer.Option(
            None, "--weights", "--teacher-weights", help="Weight file (or folder); default: found automatically."
        ),
        golden: Optional[Path] = typer.Option(
            None, "--golden", help="golden.npz of the original implementation: compare the outputs with it."
        ),
        size: int = typer.Option(256, "--size", help="Side of the square probe input for the shapes."),
    ) -> None:
        """Load a teacher and print its input spec, size and shapes; with --golden, compare with the
        reference outputs and exit 1 when one is beyond its tolerance."""
        from ctd_train.teachers import create_teacher, teacher_entry

        teacher_entry(name)  # unknown name -> CtdError listing the known teachers
        teacher = create_teacher(name, weights)
        d = describe_teacher(teacher, size)
        console = table_console()
        info = Table(show_header=False, title=f"teacher {name}")
        info.add_column("what", style="bold")
        info.add_column("value", overflow="fold")
        info.add_row("weights", d["weights"] or "-")
        info.add_row(
            "input",
            f"{d['input_size']}x{d['input_size']} {d['channel_order']}, x = (pixel - mean) * scale, "
            f"mean {_fmt_floats(d['mean'])}, scale {_fmt_floats(d['scale'])}",
        )
        info.add_row("parameters", f"{d['parameters']:,} (encoder {d['encoder_parameters']:,})")
        info.add_row(f"feature map at {size}x{size}", str(d["feature_map"]))
        info.add_row("classifier", f"yes, logits {d['logits']}" if d["has_classifier"] else "no")
        info.add_row("embedding", str(d["embedding"]) if d["embedding"] else "-")
        console.print(info)
        if golden is None:
            return

        from ctd_train.teachers.golden import compare_golden

        results = compare_golden(teacher, golden)
        table = Table(title="golden outputs", caption=str(golden))
        for col in ("output", "max abs diff", "tolerance", "ok"):
            table.add_column(col, justify="right" if col != "output" else "left")
        for r in results:
            table.add_row(r.name, f"{r.max_abs_diff:.3g}", f"{r.tolerance:.0e}",
                          "[green]ok[/]" if r.ok else "[bold red]FAIL[/]")
        console.print(table)
        bad = [r.name for r in results if not r.ok]
        if bad:
            console.print(f"[bold red]golden check failed[/] for {len(bad)} output(s): {', '.join(bad)}")
            # SystemExit (not typer.Exit, whose code is returned, not raised, in non-standalone mode)
            raise SystemExit(1)
        console.print(f"[green]golden check passed[/] ({len(results)} outputs)")

    app.add_typer(teacher_app, name="teacher")
