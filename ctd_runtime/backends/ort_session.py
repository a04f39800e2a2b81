"""The one place that builds ONNX Runtime sessions: thread count, spinning, optimisation level,
providers and profiling are set here, and a load failure becomes a CtdError naming the file.

Spinning is off by default: ONNX Runtime's intra-op threads otherwise keep spinning after each
run and take the cores from whatever runs next (another session, PyTorch, the decode), which made
interleaved benchmarks measure each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ctd_runtime.errors import CtdError

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def open_session(
    path: str | Path | bytes,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    optimization: str = "all",
    spinning: bool = False,
    profile_prefix: str | None = None,
) -> Any:
    """An `onnxruntime.InferenceSession` for the ONNX file (or serialized model bytes) `path`.

    `threads` None leaves ONNX Runtime's default (every core); `optimization` is one of
    OPTIMIZATION_LEVELS ("disable" reads metadata without rewriting the graph)."""
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise CtdError(f"unknown graph optimisation level {optimization!r}; choose from {', '.join(OPTIMIZATION_LEVELS)}")
    if threads is not None and threads < 1:
        raise CtdError(f"threads must be at least 1, not {threads}")
    where = None if isinstance(path, bytes) else Path(path)
    if where is not None and not where.is_file():
        raise CtdError("model file not found" if not where.exists() else "model path is not a file", path=where)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    source = path if isinstance(path, bytes) else str(where)
    try:
        return ort.InferenceSession(source, sess_options=options,
                                    providers=list(providers) if providers else ["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for unreadable files
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise CtdError(f"cannot load the ONNX model: {first}", path=where) from None
