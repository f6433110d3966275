"""Analyses that rerun a suite's checkpoints: `bench.py analyze importance RESULTS_DIR`.

`importance` computes the paper's token-importance study (Fig. 7) and the routing
diagnostics; `cli` selects the cells, runs it and writes plain files under
`RESULTS_DIR/analysis/`, which the report reads (never this package's code, which
imports torch). The file names are part of the results layout (amod_bench.results).
"""
DEFINITIONS = ("skip", "remove")  # of token importance: see analysis.importance
REFERENCES = ("parent", "dense")  # the dense model whose token importance is measured: see analysis.cli
