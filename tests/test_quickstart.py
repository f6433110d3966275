"""The README's main job: the quickstart suite, shrunk, through the same Ray path; and the
committed quickstart results, whose report must regenerate from files alone."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from committed_results import assert_report_regenerates

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "suites" / "quickstart.yaml"
COMMITTED = ROOT / "results" / "quickstart"
FIGURES = ("convergence_epoch", "convergence_gmacs", "convergence_seconds", "isoflop_accuracy",
           "speedup", "performance_profile")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_shrunken_quickstart_runs_through_ray_and_reports(ray_cluster, tmp_path):
    """`bench.py run` as the README runs it, in-process: cells, the suite's analyses, the report."""
    from amod_bench.cli import main

    overrides = [f"output={tmp_path / 'quickstart'}",
                 "stages.pretrain.recipe.epochs=1",
                 "stages.pretrain.recipe.eval_every=1",
                 "stages.finetune.grid.router=[dense, isoflop, mod, amod]",
                 "stages.finetune.grid.capacity=[0.5]",
                 "stages.finetune.grid.seed=[0, 1]",
                 "stages.finetune.recipe.epochs=1"]
    assert main(["run", str(QUICKSTART), *[a for o in overrides for a in ("--set", o)]]) == 0
    out = tmp_path / "quickstart"
    statuses = [json.loads(p.read_text())["status"] for p in out.glob("cells/*/summary.json")]
    assert statuses == ["done"] * 9  # pretrain + dense, isoflop, mod, amod at C = 0.5, 2 seeds

    # the suite's `analyses: [importance]` ran on the kept checkpoints before the report
    correlations = pd.read_csv(out / "analysis" / "importance_correlations.csv")
    assert {"amod", "mod"} <= set(correlations["router"])
    figures = out / "report" / "figures"
    for name in FIGURES:
        assert (figures / f"{name}.png").stat().st_size > 0, name
    assert list(figures.glob("routing_maps_*.png")), "no routing map drawn from the kept checkpoints"
    assert len(pd.read_csv(out / "report" / "tables" / "accuracy_best.csv")) > 0
    index = (out / "report" / "index.md").read_text()
    assert all(f"figures/{name}.png" in index for name in FIGURES)
    assert index.index("Verdict") < index.index("Zero-shot") < index.index("Token importance")
    verdict = pd.read_csv(out / "report" / "tables" / "verdict.csv")
    assert "paired" in " ".join(verdict["method"].astype(str))  # seeds 0 and 1 pair up across arms


def test_committed_quickstart_report_regenerates_from_files(tmp_path):
    assert_report_regenerates(COMMITTED, tmp_path)
