"""Tables and figures from `results/<suite>/` folders alone (pandas + seaborn; never Ray).

Modules, in the order data flows:
    load          results folders -> tidy frames (`load_results`), flags unusable cells
    groups        variants (seeds pooled) and workloads (routers compared)
    convergence   time-to-target, speedups with bootstrap CIs, performance profiles
    accuracy      best/final top-1/top-5 over seeds, FLOP ratios
    figures       seaborn figures (fixed color per router)
    routing_maps  kept patches per routed block, from a checkpoint (torch, lazily)
    output        atomic CSV/markdown/PNG/PDF writers
    build         `build_report`: everything above into <out>/index.md
    cli           `bench.py report`

Nothing is imported here, so `import amod_bench.report.cli` stays cheap.
"""
