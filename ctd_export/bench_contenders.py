"""The PyTorch contenders of `ctd bench` (entry point `ctd.bench_contenders`: pytorch), from a
training run: the eager pipeline a user would write (OpenCV warp, numpy normalisation, the torch
predictor, numpy decode) -- the baseline every ratio is against -- and, on a GPU, the same with
the predictor in CUDA FP16, with and without a CUDA graph.

Each is a `BaseBackend`, so `ctd bench` runs it through the same Landmarker passes as the
exported graphs. torch is imported when a contender opens, never at import time. torch's thread
count is set to the bench's `threads` on open (intra-op) and inter-op to 1, so torch does not
hold cores that the ONNX Runtime contenders use next.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime import geometry
from ctd_runtime.backends import BaseBackend
from ctd_runtime.bench.contenders import BenchContext, Contender, ContenderSet
from ctd_runtime.model_meta import ModelMetadata


class TorchPipelineBackend(BaseBackend):
    """The hand-written pipeline of one run: `device` "cpu" (FP32) or "cuda" (FP16, `cuda_graph`
    optional). `stage_seconds["decode"]` accumulates the numpy decode's time."""

    name = "pytorch"

    def __init__(self, run_dir: Path, threads: int, device: str = "cpu", cuda_graph: bool = False,
                 run: Any = None) -> None:
        super().__init__()
        self.run_dir, self.threads, self.device, self.cuda_graph = Path(run_dir), threads, device, cuda_graph
        self.path = self.run_dir
        self.stage_seconds: dict[str, float] = {"decode": 0.0}
        self._run_obj = run
        self._net: Any = None
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}

    def _open(self) -> ModelMetadata:
        import torch

        from ctd_export.metadata import metadata_for_run

        torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass
        if self._run_obj is None:
            from ctd_train.checkpoint import load_run

            self._run_obj = load_run(self.run_dir)
        net = self._run_obj.predictor.eval().requires_grad_(False)
        self._net = net.to("cuda").half() if self.device == "cuda" else net.cpu().float()
        return metadata_for_run(self._run_obj, self._run_obj.decode)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        """Normalised crops [N,3,S,S] -> heatmaps [N,K,h,w] float32 on the host."""
        import torch

        with torch.inference_mode():
            if self.device != "cuda":
                return self._net(torch.from_numpy(x)).float().numpy()
            t = torch.from_numpy(x).to("cuda", non_blocking=True).half()
            hm = self._graph_call(t) if self.cuda_graph else self._net(t)
            return hm.float().cpu().numpy()  # .cpu() synchronises

    def _graph_call(self, t: Any) -> Any:
        """The predictor replayed from a CUDA graph captured once per input shape."""
        import torch

        key = tuple(t.shape)
        if key not in self._graphs:
            static_in = t.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up outside the graph, as torch's CUDA-graph recipe asks
                    self._net(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._net(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(t)
        graph.replay()
        return static_out

    def _run(self, image: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]:
        run = self._run_obj
        crops = np.stack([geometry.warp_to_crop(im, a.astype(np.float64), run.input_size) for im, a in zip(image, crop)])
        hm = self._predict(run.normalization.apply(crops))
        t0 = time.perf_counter()
        xy, scores = run.codec.decode(hm, run.decode)
        landmarks = geometry.apply_affine(crop.astype(np.float64), xy)
        self.stage_seconds["decode"] += time.perf_counter() - t0
        return {"landmarks": landmarks.astype(np.float32), "scores": np.asarray(scores, np.float32)}

    def _close(self) -> None:
        self._net = None
        self._graphs = {}


def pytorch_contenders(run_dir: Path, context: BenchContext, run: Any = None) -> ContenderSet:
    """The eager CPU baseline, and CUDA FP16 with and without CUDA graphs where CUDA is there."""
    out = ContenderSet()
    try:
        import torch
    except ImportError:
        out.skipped["pytorch eager fp32"] = "torch is not installed (pip install 'ctd[train]')"
        return out
    out.contenders.append(Contender(
        "pytorch eager fp32", lambda: TorchPipelineBackend(run_dir, context.threads, run=run).open(),
        "pytorch", "fp32", "cpu", baseline=True, model=None))
    names = ("pytorch cuda fp16", "pytorch cuda fp16 + cuda graph")
    if not (context.gpu and torch.cuda.is_available()):
        out.skipped.update({n: "no CUDA device (or --no-gpu)" for n in names})
        return out
    for name, graph in zip(names, (False, True)):
        out.contenders.append(Contender(
            name, lambda g=graph: TorchPipelineBackend(run_dir, context.threads, "cuda", g, run=run).open(),
            "pytorch", "fp16", "cuda"))
    return out
