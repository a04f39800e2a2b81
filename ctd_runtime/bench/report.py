"""What `ctd bench` writes: a rich table on stdout, bench.json and (matplotlib importable) bench.png.
The pipeline contenders (result["pipelines"]) get rows of their own below the model contenders'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctd_runtime.atomic import write_json_atomic

TABLE_STAGES = ("image_decode", "face_box", "inference", "decode", "pfl", "end_to_end")
SHORT = {"image_decode": "read", "face_box": "box", "inference": "infer", "decode": "decode", "pfl": "pfl",
         "end_to_end": "e2e"}


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _x(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def _row(name: str, row: dict[str, Any], acc: dict[str, Any]) -> list[str]:
    st, sp = row["stages"], row["spread"]
    frac = row.get("fraction_of_peak")
    return [name, *(_ms(st[s].get("p50_ms")) for s in TABLE_STAGES), _ms(st["end_to_end"].get("p90_ms")),
            _ms(st["end_to_end"].get("p99_ms")),
            f"{sp.get('round_median_min_ms', 0):.1f}-{sp.get('round_median_max_ms', 0):.1f}",
            f"{row['throughput_images_per_s']:.1f}", f"{row['memory_mib']:.0f}",
            _x(row.get("ratio_vs_baseline", {}).get("end_to_end")), "" if frac is None else f"{100 * frac:.0f}%",
            _pct(acc.get("pfl_error_mean_abs_pfl")), _ms(acc.get("eye_corner_me_px"))]


def print_report(result: dict[str, Any], console: Any) -> None:
    """One table per batch size, model contenders then pipelines: p50 per stage, end-to-end
    p90/p99, spread, throughput, memory, ratio to the baseline, fraction of the peak, mean |PFL
    error| and eye-corner error; then accuracy, skipped contenders and notes."""
    from rich.table import Table

    peak = result["peak"]["gflops"]
    pipelines = result.get("pipelines") or {}
    batches = next(iter(result["results"].values())).keys()
    for batch in batches:
        table = Table("contender", *(SHORT[s] for s in TABLE_STAGES), "e2e p90", "e2e p99", "rounds",
                      "img/s", "MiB", "x base", "% peak", "|PFL err|", "eye px",
                      title=f"batch {batch}: p50 ms per call unless named; rounds: min-max of the round medians; "
                            f"x base: end-to-end speed-up over {result['baseline']}; |PFL err|: mean, of the "
                            f"true PFL; eye px: mean error of the PFL pair's corners", title_justify="left")
        table.columns[0].no_wrap = True  # the names tell the rows apart: never cut
        for name, per_batch in result["results"].items():
            table.add_row(*_row(name, per_batch[batch], result["accuracy"].get(name, {})))
        if pipelines.get("results"):
            table.add_section()
        for name, per_batch in pipelines.get("results", {}).items():
            table.add_row(*_row(name, per_batch[batch], pipelines["accuracy"].get(name, {})))
        console.print(table)
    flops = result["flops"]
    counted = [f"{Path(m).parent.name}/{Path(m).name} {c.get('gflops', 0):.3g}" for m, c in flops.get("models", {}).items()]
    console.print("GFLOP per network pass: " + ("; ".join(counted) if counted else flops.get("note", "not counted")),
                  f"; matmul peak {peak:.1f} GFLOP/s (numpy float32, n={result['peak']['n']}); % peak of an INT8 or "
                  "FP16 contender is against this FP32 peak (above 100%: the integer units)", highlight=False)
    for name, acc in result["accuracy"].items():
        console.print(f"{name}: ME {acc.get('me_pfl', float('nan')):.4f} PFL, FR {acc.get('fr_pfl', float('nan')):.3f}, "
                      f"AUC {acc.get('auc_pfl', float('nan')):.3f}, |PFL err| {acc.get('pfl_error_mean_abs_pfl', float('nan')):.4f}"
                      f", max {acc.get('max_px_vs_fp32') or 0:.3g} px vs FP32 ({acc['found']}/{acc['images']} found)",
                      highlight=False)
    print_pipeline_notes(pipelines, console)
    for name, why in result["skipped"].items():
        console.print(f"[dim]skipped {name}: {why}[/]", highlight=False)
    console.print(f"[dim]{result['baseline_note']}; memory: {result['memory_method']}[/]", highlight=False)


def print_pipeline_notes(pipelines: dict[str, Any], console: Any) -> None:
    """What the pipeline rows are, each one's threads, and the pipelines skipped."""
    if pipelines.get("contenders"):
        console.print(f"pipelines (below the line): {pipelines['note']}", highlight=False)
    for name, info in pipelines.get("contenders", {}).items():
        console.print(f"[dim]{name}: {info['description']}; threads: {info['threads']} "
                      f"({info['os_threads_added']} OS threads added when it opened)[/]", highlight=False)
    for name, why in pipelines.get("skipped", {}).items():
        console.print(f"[dim]skipped {name}: {why}[/]", highlight=False)


def write_outputs(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """bench.json, and bench.png when matplotlib imports (else a note in the JSON)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "bench.json"}
    png = out_dir / "bench.png"
    if plot(result, png):
        files["png"] = png
    else:
        result.setdefault("notes", []).append("matplotlib is not installed: no bench.png (pip install 'ctd[train]')")
    write_json_atomic(files["json"], result)
    return files


def plot(result: dict[str, Any], path: Path) -> bool:
    """End-to-end p50 per contender and batch as bars (whiskers: round-median spread); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    every = result["results"] | (result.get("pipelines") or {}).get("results", {})
    names = list(every)
    batches = list(next(iter(result["results"].values())))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) * len(batches) + 1.5))
    height = 0.8 / len(batches)
    for j, b in enumerate(batches):
        rows = [every[n][b] for n in names]
        p50 = [r["stages"]["end_to_end"]["p50_ms"] for r in rows]
        lo = [max(0.0, v - r["spread"].get("round_median_min_ms", v)) for v, r in zip(p50, rows)]
        hi = [max(0.0, r["spread"].get("round_median_max_ms", v) - v) for v, r in zip(p50, rows)]
        ys = [i + j * height for i in range(len(names))]
        ax.barh(ys, p50, height=height, xerr=[lo, hi], capsize=3, label=f"batch {b}")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], [_label(n, result) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("end to end, ms per call (p50; whiskers: min/max of the round medians); "
                  "label: mean |PFL error|", fontsize=8)
    ax.set_title(f"ctd bench on {result['machine']['cpu']}, {result['machine']['cores']} cores", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _label(name: str, result: dict[str, Any]) -> str:
    """The chart's name of a contender or pipeline (marked), with its mean |PFL error| where scored."""
    pipelines = result.get("pipelines") or {}
    acc = result["accuracy"].get(name) or pipelines.get("accuracy", {}).get(name) or {}
    err = acc.get("pfl_error_mean_abs_pfl")
    mark = " (pipeline)" if name in pipelines.get("results", {}) else ""
    return f"{name}{mark}" + ("" if err is None else f"\n|PFL err| {100 * err:.1f}%")
