"""Performance benchmarks: step time, memory and loader throughput of every routing variant.

Modules, one concern each:
- `cli`: `bench.py perf`'s options, presets and main;
- `variants`: the configurations benchmarked, their models, inputs and FLOPs;
- `measure`: how a step is run, timed (interleaved rounds) and its memory measured;
- `benchmark`: `bench.py perf`'s measurement of one model;
- `loader`: the WebDataset loader's throughput (the only user of `amod_bench.data`);
- `output`: stdout tables and figures;
- `gpu_run`, `gpu_sections`, `numerics`, `summary`: the prepared GPU run
  (benchmarks/gpu/run.sh), which imports neither Ray nor webdataset.
"""
from .cli import add_arguments, main

__all__ = ["add_arguments", "main"]
