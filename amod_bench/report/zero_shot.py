"""Zero-shot adaptation (the paper's Table 3): accuracy right after conversion, before any update.

A cell that starts from another cell's checkpoint (config `init_from`) logs a
step-0 evaluation: the parent's weights, converted to the cell's router and
capacity, on the cell's own validation split. The paper's argument for A-MoD's
faster convergence is that this number stays close to the parent's while a
freshly initialised MoD router collapses it.

* `step0_top1(cells, evals)`: per cell, val top-1 of its step-0 eval (NaN for
  cells without `init_from` or without a step-0 row: a cell trained from
  scratch logs step 0 too, but that is a random model, not a zero-shot one).
* `zero_shot_table(cells, evals)`: per variant (ok cells only), n seeds, mean,
  sample std and Student-t CI of the step-0 top-1; beside it the parent's
  accuracy on the same split, `parent_top1`, and `kept` = mean / parent_top1.

The parent's accuracy on the same split is the mean step-0 top-1 of the
full-depth dense cells of the same (workload, recipe): they load the parent's
weights unchanged and evaluate them on this split (the parent's own evals are
on its own dataset; they are identical when the datasets match). With no such
dense cell, the parent cell's final top-1 serves when it was evaluated on the
same dataset and split; otherwise the reference is missing (`parent_source`
says which). When the label sets differ the head is re-initialised and step 0
is near chance for every arm.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .accuracy import t_interval
from .groups import WORKLOAD_KEYS, sort_frame


def step0_top1(cells: pd.DataFrame, evals: pd.DataFrame) -> pd.Series:
    """val top-1 at step 0 per cell (index aligned with `cells`); NaN where the cell has no parent or no step-0 eval."""
    at0 = evals[evals["step"] == 0].drop_duplicates(["suite", "cell"]).set_index(["suite", "cell"])["val_top1"]
    keys = pd.MultiIndex.from_frame(cells[["suite", "cell"]])
    values = at0.reindex(keys).to_numpy(float)
    has_parent = cells["init_from"].notna().to_numpy() if "init_from" in cells else np.zeros(len(cells), bool)
    return pd.Series(np.where(has_parent, values, np.nan), index=cells.index, name="step0_top1")


def _parent_reference(group: pd.DataFrame, cells: pd.DataFrame) -> tuple[float, str]:
    """The parent's top-1 on this (workload, recipe)'s split, and where it comes from."""
    dense = group.loc[(group["router"] == "dense") & np.isfinite(group["step0_top1"]), "step0_top1"]
    if len(dense):
        return float(dense.mean()), f"full-depth dense at step 0 (n={len(dense)})"
    parents = cells[cells["cell"].isin(group["init_from"].dropna()) & cells["ok"]]
    split = [k for k in ("dataset", "eval_split") if k in cells]
    same = parents[(parents[split].to_numpy() == group[split].iloc[0].to_numpy()).all(axis=1)]
    if len(same):
        return float(same["final_top1"].mean()), f"parent's final eval (n={len(same)})"
    return np.nan, "none: no dense cell at step 0, parent evaluated on another split"


def zero_shot_table(cells: pd.DataFrame, evals: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per variant with step-0 evals (see the module docstring)."""
    keys = ["variant", "workload", *WORKLOAD_KEYS, "recipe", "capacity", "router", "router_label"]
    columns = [*keys, "n", "step0_mean", "step0_std", "step0_ci_low", "step0_ci_high", "parent_top1", "kept",
               "parent_source"]
    ok = cells[cells["ok"]].assign(step0_top1=step0_top1(cells, evals)[cells["ok"]])
    ok = ok[np.isfinite(ok["step0_top1"])]
    rows = []
    for _, group in ok.groupby(["workload", "recipe"], sort=False):
        parent, source = _parent_reference(group, cells)
        for key, arm in group.groupby(keys, sort=False, dropna=False):
            v = arm["step0_top1"].to_numpy(float)
            low, high = t_interval(v, level)
            mean = float(v.mean())
            rows.append(dict(zip(keys, key), n=v.size, step0_mean=mean, step0_std=v.std(ddof=1) if v.size > 1 else np.nan,
                             step0_ci_low=low, step0_ci_high=high, parent_top1=parent,
                             kept=mean / parent if parent > 0 else np.nan, parent_source=source))
    return sort_frame(pd.DataFrame(rows, columns=columns))
