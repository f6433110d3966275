"""The CPU study (suites/cpu_study.yaml), shrunk to one lr, one seed and a fraction of an epoch
per cell but with every stage and arm, through the same Ray path as the full run; and its
committed results, whose report must regenerate from files alone."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from committed_results import assert_report_regenerates

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "suites" / "cpu_study.yaml"
COMMITTED = ROOT / "results" / "cpu_study"
ARMS = {("dense", 1.0)} | {(r, c) for r in ("isoflop", "mod", "amod", "mod_tanh") for c in (0.125, 0.5)} \
    | {("random", 0.125), ("cls", 0.125)}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_shrunken_study_runs_every_stage_and_arm_through_ray_and_reports(ray_cluster, tmp_path):
    from amod_bench.cli import main

    overrides = [f"output={tmp_path / 'study'}", "stages.pretrain.recipe.epochs=0.5",
                 "stages.pretrain.recipe.warmup_epochs=0.1", "stages.pretrain.recipe.eval_every=0.5"]
    shrunk = ["recipe.epochs=0.25", "recipe.warmup_epochs=0.05", "recipe.eval_every=0.25"]
    for stage in ("adapt_search", "transfer_search"):
        overrides += [f"stages.{stage}.grid.lr=[2.0e-3]", *(f"stages.{stage}.{o}" for o in shrunk)]
    for stage in ("adapt", "transfer"):
        overrides += [f"stages.{stage}.grid.seed=[0]", *(f"stages.{stage}.{o}" for o in shrunk)]
    assert main(["run", str(STUDY), *[a for o in overrides for a in ("--set", o)]]) == 0

    out = tmp_path / "study"
    configs = [json.loads(p.read_text()) for p in out.glob("cells/*/config.json")]
    summaries = [json.loads(p.read_text()) for p in out.glob("cells/*/summary.json")]
    assert [s["status"] for s in summaries] == ["done"] * (1 + 4 * len(ARMS))
    for stage in ("adapt_search", "adapt", "transfer_search", "transfer"):
        arms = {(c["router"], c["capacity"]) for c in configs if c["stage"] == stage}
        assert arms == ARMS, stage
    # the main stages ran at the lr their search picked (one candidate here)
    assert all(c["lr"] == 2.0e-3 for c in configs if c["stage"] in ("adapt", "transfer"))

    index = (out / "report" / "index.md").read_text()
    assert index.index("Verdict") < index.index("Zero-shot") < index.index("Token importance")
    verdict = pd.read_csv(out / "report" / "tables" / "verdict.csv")
    assert {"adapt", "transfer"} <= set(verdict["stage"])
    correlations = pd.read_csv(out / "analysis" / "importance_correlations.csv")
    assert {"amod", "mod", "cls", "random"} <= set(correlations["router"])


def test_committed_study_report_regenerates_from_files(tmp_path):
    assert_report_regenerates(COMMITTED, tmp_path)
