"""ONNX Runtime backend for fused ctd graphs (CPU by default; any ORT execution provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ctd_runtime.backends.base import BaseBackend
from ctd_runtime.backends.ort_session import open_session
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata, session_metadata_map

FUSED_INPUTS = ("image", "crop")


class OnnxRuntimeBackend(BaseBackend):
    """Runs a fused ctd ONNX model (`ctd export` without `--raw`) with ONNX Runtime.

    `providers` defaults to CPUExecutionProvider; `threads` sets intra-op threads (None: ORT's
    default, every core). The session comes from `ort_session.open_session` (spinning off).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        if threads is not None and threads < 1:
            raise CtdError(f"threads must be at least 1, not {threads}")
        self.threads = threads
        self._session = None
        self._output_names: list[str] = []

    def _open(self) -> ModelMetadata:
        session = open_session(self.path, threads=self.threads, providers=self.providers)
        meta = ModelMetadata.from_map(session_metadata_map(session), where=self.path)
        if meta.graph != "fused":
            raise CtdError(
                f"a {meta.graph} graph (heatmaps out): the backends run fused graphs "
                "(image + crop in, landmarks out); export without --raw",
                path=self.path,
            )
        inputs = [i.name for i in session.get_inputs()]
        if inputs != list(FUSED_INPUTS):
            raise CtdError(f"fused graph inputs are {inputs}, expected {list(FUSED_INPUTS)}", path=self.path)
        self._output_names = [o.name for o in session.get_outputs()]
        missing = [n for n in ("landmarks", "scores") if n not in self._output_names]
        if missing:
            raise CtdError(f"fused graph has no output {missing[0]!r}", path=self.path)
        self._session = session
        return meta

    def _run(self, image: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]:
        assert self._session is not None
        values = self._session.run(self._output_names, {"image": image, "crop": crop})
        return dict(zip(self._output_names, values))

    def _close(self) -> None:
        self._session = None

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)
