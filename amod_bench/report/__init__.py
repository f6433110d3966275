"""Tables and figures from `results/<suite>/` folders alone (pandas + seaborn; never Ray).

Modules, in the order data flows:
    load          results folders -> tidy frames (`load_results`), flags unusable cells
    groups        variants (seeds pooled) and workloads (routers compared)
    convergence   time-to-target, speedups with bootstrap CIs, performance profiles
    accuracy      best/final top-1/top-5 over seeds, FLOP ratios; t and Welch intervals
    zero_shot     step-0 top-1 of cells started from a checkpoint (paper Table 3)
    verdict       each router vs its baselines: effects with paired CIs, a word per CI
    markdown      index.md's text of every table
    figures       seaborn figures (fixed color per router)
    routing_maps  kept patches per routed block, from a checkpoint (torch, lazily)
    output        atomic CSV/markdown/PNG/PDF writers
    build         `build_report`: everything above into <out>/index.md (verdict, figures, tables)
    cli           `bench.py report`

Nothing is imported here, so `import amod_bench.report.cli` stays cheap.
"""
