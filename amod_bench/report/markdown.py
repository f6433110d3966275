"""The text of index.md's tables: each result frame as a display frame (CIs and means as text).

Pure functions of the frames the other modules compute; the CSVs keep full
precision, these frames are what `output.write_markdown` renders.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .groups import display_name
from .load import UNITS
from .verdict import MEASURES, SPEEDUPS

UNIT_NAMES = {"epoch": "epochs", "step": "steps", "train_macs": "train MACs", "train_seconds": "seconds"}


def n_text(n: pd.Series) -> str:
    n = n.dropna().astype(int)
    if n.empty:
        return "seeds n = 0"
    return f"seeds n = {n.min()}" if n.min() == n.max() else f"seeds n = {n.min()}-{n.max()} (column n)"


def ci_text(low: float, high: float, spec: str = ".2f") -> str:
    return "-" if np.isnan(low) or np.isnan(high) else f"[{low:{spec}}, {high:{spec}}]"


def pm_text(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.2f}" if not np.isfinite(std) else f"{mean:.2f} ± {std:.2f}"


def where_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that identify a row for display: only the keys that vary, plus router and capacity."""
    keys = [k for k in ("stage", "model", "dataset", "recipe") if k in frame and frame[k].nunique() > 1]
    if not keys:
        keys = ["model", "dataset"]
    return keys + ["router_label", "capacity"]


def accuracy_md(table: pd.DataFrame) -> pd.DataFrame:
    show = table[where_columns(table) + ["n"]].copy()
    show["capacity"] = table["capacity"].map(lambda c: f"{c:g}")
    for m in ("top1", "top5"):
        show[f"{m} mean ± std"] = [pm_text(a, b) for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"])]
        show[f"{m} 95% CI"] = [ci_text(a, b) for a, b in zip(table[f"{m}_ci_low"], table[f"{m}_ci_high"])]
    show["GMACs"] = table["gmacs"].map(lambda v: f"{v:.4g}" if np.isfinite(v) else "-")
    show["vs isoflop"] = table["flop_ratio_isoflop"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "-")
    show["vs dense"] = table["flop_ratio_dense"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "-")
    return show


def speedup_md(table: pd.DataFrame, rule: str) -> pd.DataFrame:
    sub = table[table["rule"] == rule]
    if sub.empty:
        return sub
    keys = where_columns(sub) + ["baseline_label", "n"]
    text = sub.assign(n=sub["n_router"].astype(str) + " vs " + sub["n_baseline"].astype(str), value=[
        "not reached by either" if np.isnan(s) and np.isinf(r) and np.isinf(b)
        else "router not reached" if s == 0 and np.isinf(r)
        else "baseline not reached" if np.isinf(s)
        else "-" if np.isnan(s)
        else f"{s:.2f} {ci_text(lo, hi)}"
        for s, lo, hi, r, b in zip(sub["speedup"], sub["ci_low"], sub["ci_high"], sub["router_median"],
                                   sub["baseline_median"])])
    text["capacity"] = text["capacity"].map(lambda c: f"{c:g}")
    wide = text.pivot_table(index=keys, columns="unit", values="value", aggfunc="first", sort=False)
    wide = wide[[u for u in UNITS if u in wide.columns]].rename(columns=UNIT_NAMES).reset_index()
    return wide.rename(columns={"baseline_label": "baseline"})


def ttt_md(medians: pd.DataFrame, rule: str) -> pd.DataFrame:
    sub = medians[medians["rule"] == rule]
    show = sub[where_columns(sub) + ["n", "reached", "target"]].copy()
    show["capacity"] = sub["capacity"].map(lambda c: f"{c:g}")
    show["reached"] = sub["reached"].astype(str) + "/" + sub["n"].astype(str)
    for unit in UNITS:
        spec = ".4g" if unit != "train_macs" else ".3e"
        show[UNIT_NAMES[unit]] = sub[unit].map(lambda v, s=spec: "not reached" if np.isinf(v) else
                                               ("-" if np.isnan(v) else format(v, s)))
    return show.drop(columns="n")


def profile_md(profile: pd.DataFrame) -> pd.DataFrame:
    if profile.empty:
        return profile
    show = profile[profile["tau"].isin([1.0, 1.25, 1.5, 2.0, 3.0, 4.0])]
    wide = show.pivot_table(index=["rule", "unit", "router_label"], columns="tau", values="fraction",
                            aggfunc="first", sort=False)
    wide.columns = [f"tau={t:g}" for t in wide.columns]
    n = profile.groupby(["rule", "unit", "router_label"], sort=False)["n_workloads"].first()
    return wide.assign(workloads=n).reset_index()


def signed(value: float, spec: str = ".2f") -> str:
    """+1.23 / -0.40; float noise around zero prints as +0.00, never -0.00."""
    text = format(value, "+" + spec)
    return text.replace("-", "+") if float(text) == 0 else text


def effect_text(row) -> str:
    """"+1.23 [-0.40, +2.86] not resolved" for a difference, "1.41x [1.10, 1.85] A-MoD faster" for a speedup."""
    if row.measure in SPEEDUPS:
        if np.isnan(row.estimate):
            point = "neither reached"
        elif row.estimate == 0 and row.baseline_median == 0:
            point = "baseline at target from step 0"  # nothing to speed up: the baseline starts there
        elif row.estimate == 0 or np.isinf(row.estimate):
            point = "router not reached" if row.estimate == 0 else "baseline not reached"
        else:
            point = f"{row.estimate:.2f}x"
        return f"{point} {ci_text(row.ci_low, row.ci_high)} {row.word}"
    ci = "-" if np.isnan(row.ci_low) else f"[{signed(row.ci_low)}, {signed(row.ci_high)}]"
    return f"{signed(row.estimate)} {ci} {row.word}"


def _seeds_text(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    if first["paired"]:
        return f"{first['n_router']} paired"
    return f"{first['n_router']} vs {first['n_baseline']} unpaired"


def verdict_md(effects: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison, one column per measure: estimate, CI and word (see verdict.py)."""
    if effects.empty:
        return pd.DataFrame(columns=["C", "comparison", "seeds", *MEASURES.values()])
    keys = ["workload", "recipe", "capacity", "router", "router_label", "baseline", "baseline_label"]
    shown = [k for k in ("workload", "recipe") if effects[k].nunique() > 1]
    rows = []
    for key, group in effects.groupby(keys, sort=False):
        comp = dict(zip(keys, key))
        texts = {MEASURES[r.measure]: effect_text(r) for r in group.itertuples()}
        rows.append({**{k: comp[k] for k in shown}, "C": f"{comp['capacity']:g}",
                     "comparison": f"{display_name(comp['router'], comp['router_label'])} vs "
                                   f"{display_name(comp['baseline'], comp['baseline_label'])}",
                     "seeds": _seeds_text(group), **{name: texts.get(name, "-") for name in MEASURES.values()}})
    return pd.DataFrame(rows, columns=[*shown, "C", "comparison", "seeds", *MEASURES.values()])


def zero_shot_md(table: pd.DataFrame) -> pd.DataFrame:
    """Step-0 top-1 per router and capacity, beside the parent's top-1 on the same split and the fraction kept."""
    show = table[where_columns(table) + ["n"]].copy()
    show["capacity"] = table["capacity"].map(lambda c: f"{c:g}")
    show["step-0 top-1 mean ± std"] = [pm_text(a, b) for a, b in zip(table["step0_mean"], table["step0_std"])]
    show["95% CI"] = [ci_text(a, b) for a, b in zip(table["step0_ci_low"], table["step0_ci_high"])]
    show["parent, same split"] = table["parent_top1"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "-")
    show["kept"] = table["kept"].map(lambda v: f"{v:.1%}" if np.isfinite(v) else "-")
    show["parent from"] = table["parent_source"]
    return show

