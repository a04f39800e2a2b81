"""`ctd bench`: every way of running a ctd model timed side by side in one process.

    result = run_bench(["exports/mobilenet/model.onnx", "runs/mobilenet"], BenchConfig(batches=(1, 4)))

Modules: `contenders` (what is timed, found from model siblings and plug-ins), `pipelines`
(whole ready-made tools timed end to end beside them: `run_bench(..., pipelines=PipelineSet(...))`),
`harness` (the interleaved timing per stage, accuracy, ratios), `stats` (percentiles, spread, the order),
`peak` (the matmul probe), `memory`, `timing` (the backend
wrapper that records each pass), `report` (table, JSON, PNG). No torch, no onnx: the MACs of the
graph come from a counter found by entry point (ctd.bench_macs), the export package's.
"""

from ctd_runtime.bench.contenders import BenchContext, Contender, ContenderSet, find_contenders
from ctd_runtime.bench.harness import BenchConfig, parse_batches, run_bench

__all__ = ["BenchConfig", "BenchContext", "Contender", "ContenderSet", "find_contenders", "parse_batches", "run_bench"]
