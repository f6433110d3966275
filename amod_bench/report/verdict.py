"""The verdict: each router against its baselines, every effect with a CI and a word read off the CI.

Comparisons, per compared set (stage, model, dataset, recipe, capacity; the
full-depth dense arm is compared at every capacity): A-MoD vs MoD, A-MoD vs
isoFLOP, A-MoD vs full-depth dense, and every other routed arm (MoD-tanh,
random, CLS, ...) vs MoD. Each router variant meets each baseline variant.

Measures (`MEASURES`):

* `best_top1`, `final_top1`, `step0_top1`: router minus baseline, in
  percentage points. Seeds are shared across arms (same data order and head
  initialisation), so when both arms ran the same seeds the effect is the
  mean of the per-seed differences with a paired Student-t CI (t_interval of
  the differences); otherwise the difference of the means with a Welch t CI
  (`method` says which). Step 0 is the zero-shot eval of cells that start from
  a checkpoint (zero_shot.step0_top1).
* `epoch`, `train_macs`, `train_seconds`: the time-to-target speedup
  (baseline time / router time, > 1: router faster) against the common target,
  with its percentile-bootstrap CI, paired by seed when the seeds match
  (convergence.speedups); `router_median` / `baseline_median` are both sides'
  median times (a baseline at 0 was at the target before any training).

The word comes from the CI alone, never from the point estimate: a CI wholly
above the no-effect value (0 for differences, 1 for speedups) gives "better" /
"faster", wholly below "worse" / "slower", one that contains it (a zero-width
CI at it included) "not resolved"; with fewer than 2 seeds on a side there is
no verdict ("too few seeds"), and a speedup where neither arm reached the
target has none either ("no estimate").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .accuracy import t_interval, welch_interval
from .convergence import PAIRED_BOOTSTRAP
from .groups import WORKLOAD_KEYS, at_compared_capacities, display_name, router_rank, seeds_pair

AMOD_BASELINES = ("mod", "isoflop", "dense")  # A-MoD against each; every other routed arm against MoD
NOT_ROUTED = ("dense", "isoflop")
DIFFERENCES = {"best_top1": "best top-1", "final_top1": "final top-1", "step0_top1": "step-0 top-1"}
SPEEDUPS = {"epoch": "epochs", "train_macs": "train MACs", "train_seconds": "seconds"}
MEASURES = {**DIFFERENCES, **SPEEDUPS}  # measure -> short name (table column, forest panel)
PAIRED_T = "paired t"
WELCH_T = "Welch t (unpaired: seeds differ)"
ARM_KEYS = ["workload", *WORKLOAD_KEYS, "recipe", "capacity", "router", "router_label", "variant"]
COMPARISON_KEYS = [*ARM_KEYS, "baseline", "baseline_label", "baseline_variant"]


def baselines_of(router: str) -> tuple[str, ...]:
    if router == "amod":
        return AMOD_BASELINES
    return () if router in (*NOT_ROUTED, "mod") else ("mod",)


def no_effect(measure: str) -> float:
    """1 for a speedup (a ratio), 0 for a difference in points."""
    return 1.0 if measure in SPEEDUPS else 0.0


def word(measure: str, low: float, high: float, who: str, n_seeds: int = 2) -> str:
    """The verdict read off the CI (see the module docstring); `who` names the router, `n_seeds` the smaller side."""
    if n_seeds < 2:
        return "too few seeds"
    if np.isnan(low) or np.isnan(high):
        return "no estimate"  # a speedup where neither arm reached the target
    up, down = ("faster", "slower") if measure in SPEEDUPS else ("better", "worse")
    if low > no_effect(measure):
        return f"{who} {up}"
    if high < no_effect(measure):
        return f"{who} {down}"
    return "not resolved"


def _difference(router: pd.DataFrame, baseline: pd.DataFrame, column: str, level: float) -> dict:
    """Effect of router minus baseline on `column`, paired by seed when the seeds match."""
    r = router.dropna(subset=[column]).set_index("seed")[column]
    b = baseline.dropna(subset=[column]).set_index("seed")[column]
    if r.empty or b.empty:
        return {}
    if seeds_pair(r.index, b.index):
        d = (r - b.reindex(r.index)).to_numpy(float)
        low, high = t_interval(d, level)
        return dict(estimate=float(d.mean()), ci_low=low, ci_high=high, method=PAIRED_T, n_router=len(r),
                    n_baseline=len(b), paired=True)
    low, high = welch_interval(r.to_numpy(float), b.to_numpy(float), level)
    return dict(estimate=float(r.mean() - b.mean()), ci_low=low, ci_high=high, method=WELCH_T, n_router=len(r),
                n_baseline=len(b), paired=False)


def comparisons(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (router variant, baseline variant, compared capacity) among the ok cells (COMPARISON_KEYS)."""
    ok = at_compared_capacities(cells[cells["ok"]])
    arms = ok.drop_duplicates(["variant", "capacity"])
    rows = []
    for _, group in arms.groupby(["workload", "recipe", "capacity"], sort=False):
        by_router = {r: g for r, g in group.groupby("router", sort=False)}
        for me in group.to_dict("records"):
            for base in baselines_of(me["router"]):
                for partner in by_router.get(base, pd.DataFrame()).to_dict("records"):
                    rows.append({**{k: me[k] for k in ARM_KEYS}, "baseline": base,
                                 "baseline_label": partner["router_label"], "baseline_variant": partner["variant"]})
    out = pd.DataFrame(rows, columns=COMPARISON_KEYS)
    out["_r"] = out["router"].map(lambda r: router_rank(r))
    out["_b"] = [baselines_of(r).index(b) for r, b in zip(out["router"], out["baseline"])]  # A-MoD vs MoD first
    order = ["workload", "recipe", "capacity", "_r", "router_label", "_b", "baseline_label"]
    return out.sort_values(order, kind="stable").drop(columns=["_r", "_b"]).reset_index(drop=True)


def effects(cells: pd.DataFrame, step0: pd.Series, speed: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (comparison, measure): estimate, CI, no-effect value, method, seeds and the word.

    `step0` is zero_shot.step0_top1(cells, evals); `speed` is convergence.speedups
    (its common-rule rows are used).
    """
    ok = cells[cells["ok"]].assign(step0_top1=step0[cells["ok"]])
    by_variant = {v: g for v, g in ok.groupby("variant", sort=False)}
    common = speed[speed["rule"] == "common"].set_index(["variant", "capacity", "baseline_label", "unit"]) \
        if len(speed) else None
    rows = []
    for comp in comparisons(cells).to_dict("records"):
        who = display_name(comp["router"], comp["router_label"])
        router, baseline = by_variant[comp["variant"]], by_variant[comp["baseline_variant"]]
        for measure in MEASURES:
            if measure in DIFFERENCES:
                found = _difference(router, baseline, measure, level)
            else:
                key = (comp["variant"], comp["capacity"], comp["baseline_label"], measure)
                if common is None or key not in common.index:
                    continue
                s = common.loc[key]
                found = dict(estimate=s["speedup"], ci_low=s["ci_low"], ci_high=s["ci_high"], method=s["method"],
                             n_router=int(s["n_router"]), n_baseline=int(s["n_baseline"]),
                             paired=s["method"] == PAIRED_BOOTSTRAP,
                             router_median=s["router_median"], baseline_median=s["baseline_median"])
            if found:
                rows.append({**comp, "measure": measure, "no_effect": no_effect(measure), **found,
                             "word": word(measure, found["ci_low"], found["ci_high"], who,
                                          min(found["n_router"], found["n_baseline"]))})
    columns = [*COMPARISON_KEYS, "measure", "no_effect", "estimate", "ci_low", "ci_high", "method", "n_router",
               "n_baseline", "paired", "word", "router_median", "baseline_median"]
    return pd.DataFrame(rows, columns=columns)
