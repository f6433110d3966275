"""Convergence speed: time-to-target, speedups with bootstrap CIs, performance profiles.

Rules (also printed in the report, one line per table or figure):

* **Time to target** of one cell, in each of the units `epoch`, `step`,
  `train_macs`, `train_seconds` (metrics.jsonl columns): take the evals in step
  order with a finite val_top1; find the *first* eval i whose val_top1 >= the
  target; if i is the first eval, the time is that eval's value; otherwise
  interpolate linearly between eval i-1 and eval i in each unit separately:
  t = u[i-1] + (target - y[i-1]) / (y[i] - y[i-1]) * (u[i] - u[i-1]).
  A cell that never reaches the target gets +inf ("not reached"); a unit
  missing at the evals involved gives NaN.
* **peak rule** (the paper's): target = the cell's own peak val_top1 minus X,
  X = `targets.within_peak_pct` (default 2). `peak_mode="points"` (default)
  reads X as absolute percentage points (peak - X); `"relative"` as a
  fraction of the peak (peak * (1 - X/100)).
* **common rule** (AlgoPerf-style): one target per compared set, i.e. per
  (stage, model, dataset, recipe, capacity), the full-depth dense arm
  included at every capacity. In order of precedence: `--target-top1`; the
  suite's `targets.top1`; else the rule `--common-target`, else the suite's
  `targets.common_rule` (default `"lowest"`):
  - `"lowest"`: the lowest, over the arms compared there, of each arm's
    median over seeds of its best val_top1 (`median_low`). Every arm's
    median best is at or above it, so every arm reaches it on most of its
    seeds (at least n - floor((n-1)/2) of n) and its median time is finite:
    the time to target is defined for every arm that trains normally. (The
    dense median best, the old default, is a target the routed arms of a
    small fine-tune may never reach, which leaves their time undefined.)
    A bootstrap resample in which most of an arm's seeds missed the target
    has an infinite median, so the weakest arm's speedup CIs often run to
    0 or inf.
  - `"every_run"`: the lowest best val_top1 of any run compared there: every
    run reaches it, so every time is finite and every speedup CI bounded,
    at the price of a lower (earlier) target set by the weakest single run.
  - `"dense"`: the median over seeds of the full-depth dense model's best
    val_top1 (if several dense variants, the highest of their medians), one
    target per (stage, model, dataset).
  `median_low` takes the lower of the two middle values for even n, so at
  least half of the seeds reach the target.
* **Speedup** of a router over a baseline = median over seeds of the
  baseline's time / median over seeds of the router's time (> 1: the router is
  faster). CI: percentile bootstrap (2000 resamples by default; percentiles
  by numpy's inverted_cdf, i.e. actual resample values) over seeds, whole
  cells with all four units together. Seeds are shared across arms (same
  data order and head init), so when router and baseline have the same seeds
  the bootstrap is *paired*: one resample of seeds serves both sides; when
  their seeds differ, both are resampled independently (`method` says
  which). Each (rule, router, baseline, capacity) comparison draws from its
  own stream seeded by (seed, crc32 of its name), so results do not depend
  on which other cells are loaded. Baselines are matched on workload, recipe
  and capacity; the dense baseline matches every capacity.
* **Performance profile** (AlgoPerf form): per workload x recipe x capacity, a
  router's ratio r = its median time / the fastest router's median time
  (missing or not reached: inf); rho(tau) = fraction of those workloads with
  r <= tau.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from .groups import BASELINES, WORKLOAD_KEYS, at_compared_capacities, router_rank, seeds_pair, sort_frame
from .load import UNITS

RULES = ("peak", "common")
PAIRED_BOOTSTRAP = "paired bootstrap over seeds"
UNPAIRED_BOOTSTRAP = "unpaired bootstrap (seeds differ)"
PEAK_MODES = ("points", "relative")


def first_crossing(units: np.ndarray, top1: np.ndarray, target: float) -> np.ndarray:
    """Time to `target` in every column of `units` (n_evals x n_units), evals in step order.

    Evals whose top1 is not finite are ignored. Returns inf per unit when the
    target is never reached, NaN when there is no target or no usable eval.
    """
    units = np.asarray(units, dtype=float).reshape(len(top1), -1)
    top1 = np.asarray(top1, dtype=float)
    keep = np.isfinite(top1)
    units, top1 = units[keep], top1[keep]
    if not np.isfinite(target) or top1.size == 0:
        return np.full(units.shape[1], np.nan)
    hits = np.flatnonzero(top1 >= target)
    if hits.size == 0:
        return np.full(units.shape[1], np.inf)
    i = hits[0]
    if i == 0:
        return units[0].copy()
    frac = (target - top1[i - 1]) / (top1[i] - top1[i - 1])  # in (0, 1]: y[i-1] < target <= y[i]
    return units[i - 1] + frac * (units[i] - units[i - 1])


def peak_target(peak: float, within: float, mode: str = "points") -> float:
    """The paper's target: `within` points below `peak` ("points"), or `within`% of it ("relative")."""
    if mode == "points":
        return peak - within
    if mode == "relative":
        return peak * (1.0 - within / 100.0)
    raise ValueError(f"peak mode must be one of {PEAK_MODES}, got {mode!r}")


def median_low(values) -> float:
    """The median for odd n; for even n the lower of the two middle values (always an observed value).

    Used for the dense target: with the plain median and an even number of
    seeds exactly half the dense seeds reach it, so the dense model's own
    median time-to-target would be infinite.
    """
    v = np.asarray(values, dtype=float)
    v = np.sort(v[np.isfinite(v)])
    return float(v[(v.size - 1) // 2]) if v.size else np.nan


COMMON_RULES = ("lowest", "every_run", "dense")
DEFAULT_COMMON_RULE = "lowest"
TARGET_KEYS = [*WORKLOAD_KEYS, "recipe", "capacity"]  # one common target per compared set


def _dense_median_best(ok: pd.DataFrame) -> tuple[float, str]:
    dense = ok[ok["router"] == "dense"]
    if dense.empty:
        return np.nan, "none: no finished dense cell and no targets.top1"
    medians = dense.groupby("variant")["best_top1"].agg([median_low, "size"])
    best = medians.sort_values("median_low", ascending=False, kind="stable").iloc[0]
    return float(best["median_low"]), f"dense median best (n={int(best['size'])})"


def _lowest_median_best(ok: pd.DataFrame) -> tuple[float, str]:
    medians = ok.groupby("variant").agg(best=("best_top1", median_low), n=("cell", "size"),
                                        router=("router_label", "first"))
    medians = medians[np.isfinite(medians["best"])]
    if medians.empty:
        return np.nan, "none: no finished cell"
    low = medians.sort_values("best", kind="stable").iloc[0]
    return float(low["best"]), f"lowest median best: {low['router']} (n={int(low['n'])})"


def _lowest_run_best(ok: pd.DataFrame) -> tuple[float, str]:
    runs = ok[np.isfinite(ok["best_top1"].to_numpy(float))]
    if runs.empty:
        return np.nan, "none: no finished cell"
    low = runs.sort_values(["best_top1", "cell"], kind="stable").iloc[0]
    seed = f" seed {int(low['seed'])}" if pd.notna(low["seed"]) else ""
    return float(low["best_top1"]), f"lowest best of any run: {low['router_label']}{seed} (n={len(runs)})"


def _rule_of(group: pd.DataFrame, rule: str | None) -> tuple[str, str]:
    """The rule for one compared set: `rule` (the CLI's) if given, else the suites' targets.common_rule."""
    if rule is not None:
        return rule, ""
    in_suite = group["target_common_rule"].dropna().unique() if "target_common_rule" in group else []
    if len(in_suite) == 0:
        return DEFAULT_COMMON_RULE, ""
    chosen = sorted(in_suite)[0]
    return chosen, f" (first of {sorted(in_suite)})" if len(in_suite) > 1 else ""


def common_targets(cells: pd.DataFrame, top1: float | None = None, rule: str | None = None) -> pd.DataFrame:
    """One row per compared set (TARGET_KEYS): `common_target` and where it came from (`target_source`).

    `top1` (a CLI override) wins over the suites' `targets.top1`, which wins
    over `rule` (a CLI override, see COMMON_RULES and the module docstring),
    which wins over the suites' `targets.common_rule`. The dense arm is
    compared at every capacity of its (workload, recipe). Only `ok` cells set
    a target.
    """
    if rule is not None and rule not in COMMON_RULES:
        raise ValueError(f"common target rule must be one of {COMMON_RULES}, got {rule!r}")
    dense_rule = {key: _dense_median_best(group[group["ok"]]) for key, group in cells.groupby(WORKLOAD_KEYS)}
    rows = []
    for key, group in at_compared_capacities(cells).groupby(TARGET_KEYS, sort=True):
        set_in_suite = group["target_top1"].dropna()
        if top1 is not None:
            target, source = float(top1), "--target-top1"
        elif len(set_in_suite):
            target, source = float(set_in_suite.iloc[0]), "targets.top1"
            if set_in_suite.nunique() > 1:
                source += f" (first of {sorted(set_in_suite.unique())})"
        else:
            chosen, mixed = _rule_of(group, rule)
            if chosen == "dense":
                target, source = dense_rule[key[:len(WORKLOAD_KEYS)]]
            elif chosen == "every_run":
                target, source = _lowest_run_best(group[group["ok"]])
            else:
                target, source = _lowest_median_best(group[group["ok"]])
            source += mixed
        rows.append(dict(zip(TARGET_KEYS, key), common_target=target, target_source=source))
    return pd.DataFrame(rows, columns=[*TARGET_KEYS, "common_target", "target_source"])


def rules_in_use(cells: pd.DataFrame, top1: float | None = None, rule: str | None = None) -> list[str]:
    """The common rules the report applies somewhere (for its methods text), in COMMON_RULES order."""
    if top1 is not None:
        return []
    if rule is not None:
        return [rule]
    unset = cells["target_top1"].isna()
    used = set(cells.loc[unset, "target_common_rule"].fillna(DEFAULT_COMMON_RULE)) if unset.any() else set()
    return [r for r in COMMON_RULES if r in used]


def times_to_target(cells: pd.DataFrame, evals: pd.DataFrame, *, within: float | None = None,
                    peak_mode: str = "points", common_top1: float | None = None,
                    common_rule: str | None = None) -> pd.DataFrame:
    """One row per (cell, compared capacity, rule) for every cell with evals: target, peak, time in each unit.

    A dense cell has a row at every capacity it is compared at (its common
    target differs between them). `within` overrides each cell's
    `targets.within_peak_pct` (default 2.0). Flagged cells get rows too
    (their `ok` column says so); aggregates drop them.
    """
    if peak_mode not in PEAK_MODES:
        raise ValueError(f"peak mode must be one of {PEAK_MODES}, got {peak_mode!r}")
    common = common_targets(cells, common_top1, common_rule)
    info = at_compared_capacities(cells).merge(common, on=TARGET_KEYS, how="left")
    by_cell = {key: group for key, group in info.groupby(["suite", "cell"], sort=False)}
    rows = []
    for (suite, cell), ev in evals.groupby(["suite", "cell"], sort=True):
        if (suite, cell) not in by_cell:
            continue
        top1 = ev["val_top1"].to_numpy()
        units = ev[list(UNITS)].to_numpy()
        finite = top1[np.isfinite(top1)]
        peak = float(finite.max()) if finite.size else np.nan
        for meta in by_cell[(suite, cell)].to_dict("records"):
            x = within if within is not None else meta["target_within_peak_pct"]
            x = 2.0 if pd.isna(x) else float(x)
            for rule, target in (("peak", peak_target(peak, x, peak_mode)), ("common", meta["common_target"])):
                times = first_crossing(units, top1, float(target))
                rows.append({"suite": suite, "cell": cell, "capacity": meta["capacity"], "rule": rule,
                             "target": float(target), "peak": peak, "within": x if rule == "peak" else np.nan,
                             **dict(zip(UNITS, times)),
                             "reached": bool(np.isfinite(target) and (finite >= target).any())})
    columns = ["suite", "cell", "capacity", "rule", "target", "peak", "within", *UNITS, "reached"]
    out = pd.DataFrame(rows, columns=columns)
    keys = ["variant", "workload", "recipe", "router", "router_label", "seed", "ok", *WORKLOAD_KEYS]
    return out.merge(cells[["suite", "cell", *[k for k in keys if k in cells]]], on=["suite", "cell"], how="left")


def median_times(ttt: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds (ok cells only) of each unit, per (rule, variant, compared capacity); `n` seeds."""
    ok = ttt[ttt["ok"]]
    keys = ["rule", "variant", "workload", *WORKLOAD_KEYS, "recipe", "capacity", "router", "router_label"]
    agg = ok.groupby(keys, sort=False, dropna=False).agg(
        target=("target", "median"), n=("cell", "size"), reached=("reached", "sum"),
        **{u: (u, "median") for u in UNITS})
    agg = agg.reset_index()
    agg["reached"] = agg["reached"].astype(int)
    return sort_frame(agg, ["rule"])


def bootstrap_speedup(router, baseline, *, n_boot: int = 2000, seed=0, level: float = 0.95,
                      paired: bool = False):
    """median(baseline) / median(router) and its percentile-bootstrap CI, over seeds.

    `router` (n_r,) or (n_r, k) and `baseline` (n_b,) or (n_b, k): seeds x
    units. Seeds (whole cells, all units together) are resampled with
    replacement: router and baseline independently, or with `paired` (rows
    aligned by seed, n_r == n_b) one resample of seed indices for both.
    Returns (point, low, high), floats for 1-D input, arrays of k otherwise.
    inf / inf (neither reached) is NaN; resamples giving NaN are left out of
    the percentiles.
    """
    router, baseline = np.asarray(router, float), np.asarray(baseline, float)
    flat = router.ndim == 1
    router, baseline = router.reshape(len(router), -1), baseline.reshape(len(baseline), -1)
    if paired and len(router) != len(baseline):
        raise ValueError(f"paired bootstrap needs one baseline seed per router seed, got {len(router)} and "
                         f"{len(baseline)}")
    rng = np.random.default_rng(seed)
    r_idx = rng.integers(0, len(router), (n_boot, len(router)))
    b_idx = r_idx if paired else rng.integers(0, len(baseline), (n_boot, len(baseline)))
    with np.errstate(divide="ignore", invalid="ignore"):
        point = np.median(baseline, axis=0) / np.median(router, axis=0)
        ratios = np.median(baseline[b_idx], axis=1) / np.median(router[r_idx], axis=1)  # (n_boot, k)
    alpha = (1.0 - level) / 2.0
    low, high = np.full(point.shape, np.nan), np.full(point.shape, np.nan)
    for j in range(ratios.shape[1]):
        col = ratios[:, j][~np.isnan(ratios[:, j])]
        if col.size:
            # inverted_cdf picks resample values (no interpolation), so inf endpoints stay inf, never NaN
            low[j], high[j] = np.quantile(col, [alpha, 1.0 - alpha], method="inverted_cdf")
    if flat:
        return float(point[0]), float(low[0]), float(high[0])
    return point, low, high


def _stable_seed(seed: int, *parts) -> list[int]:
    """A per-comparison seed that does not change when other comparisons are added."""
    return [seed, zlib.crc32("|".join(map(str, parts)).encode())]


def speedups(ttt: pd.DataFrame, *, baselines=BASELINES, n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> pd.DataFrame:
    """One row per (rule, unit, router variant, baseline variant, capacity) with the speedup and its CI.

    `method` says whether the bootstrap was paired by seed (both sides have
    the same seeds) or unpaired (see the module docstring).
    """
    ok = ttt[ttt["ok"]].sort_values("seed", kind="stable")
    rows = []
    times = {k: (g["seed"].tolist(), g[list(UNITS)].to_numpy(float))  # seeds, (seeds x units)
             for k, g in ok.groupby(["rule", "variant", "capacity"], sort=True)}
    meta = {m["variant"]: m for m in ok.drop_duplicates(["variant"]).to_dict("records")}
    by_router: dict[tuple, list[str]] = {}
    for v, m in meta.items():
        by_router.setdefault((m["router"], m["workload"], m["recipe"]), []).append(v)
    for (rule, variant, capacity), (r_seeds, r) in times.items():
        me = meta[variant]
        if me["router"] == "dense":
            continue
        for base in baselines:
            if base == me["router"]:
                continue
            for partner in by_router.get((base, me["workload"], me["recipe"]), []):
                if (rule, partner, capacity) not in times:
                    continue
                b_seeds, b = times[(rule, partner, capacity)]
                paired = seeds_pair(r_seeds, b_seeds)
                point, low, high = bootstrap_speedup(r, b, n_boot=n_boot, level=level, paired=paired,
                                                     seed=_stable_seed(seed, rule, variant, partner, capacity))
                unknown = np.isnan(r).any(axis=0) | np.isnan(b).any(axis=0)  # a unit missing in some seed
                for j, unit in enumerate(UNITS):
                    rows.append({
                        "rule": rule, "unit": unit, "variant": variant, "workload": me["workload"],
                        **{k: me[k] for k in WORKLOAD_KEYS}, "recipe": me["recipe"], "capacity": capacity,
                        "router": me["router"], "router_label": me["router_label"],
                        "baseline": base, "baseline_label": meta[partner]["router_label"],
                        "router_median": float(np.median(r[:, j])), "baseline_median": float(np.median(b[:, j])),
                        "speedup": np.nan if unknown[j] else point[j], "ci_low": np.nan if unknown[j] else low[j],
                        "ci_high": np.nan if unknown[j] else high[j], "n_router": len(r), "n_baseline": len(b),
                        "method": PAIRED_BOOTSTRAP if paired else UNPAIRED_BOOTSTRAP,
                    })
    columns = ["rule", "unit", "variant", "workload", *WORKLOAD_KEYS, "recipe", "capacity", "router",
               "router_label", "baseline", "baseline_label", "router_median", "baseline_median", "speedup",
               "ci_low", "ci_high", "n_router", "n_baseline", "method"]
    out = pd.DataFrame(rows, columns=columns)
    if out.empty:
        return out
    out["_b"] = out["baseline"].map(lambda r: router_rank(r)[0])
    out["_u"] = out["unit"].map(UNITS.index)
    out = sort_frame(out, ["_b", "baseline_label", "rule", "_u"]).drop(columns=["_b", "_u"])
    return out


def profile_ratios(medians: pd.DataFrame) -> pd.DataFrame:
    """Per (rule, unit, profile workload, router_label): median time / the fastest router's (inf: not reached).

    A profile workload is (workload, recipe, capacity); `medians` already holds
    the dense variants at every capacity they are compared at. Units never
    measured in a workload are dropped.
    """
    keys = ["rule", "workload", "recipe", "capacity"]
    long = medians.melt(id_vars=[*keys, "router", "router_label"], value_vars=list(UNITS),
                        var_name="unit", value_name="time")
    best = long.groupby([*keys, "unit"], sort=False)["time"].transform("min")
    long = long[best.notna()]
    t, best = long["time"].to_numpy(float), best[best.notna()].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isfinite(t) & np.isfinite(best), t / best, np.inf)  # not reached, or nobody did
        ratio = np.where(best == 0, np.where(t == 0, 1.0, np.inf), ratio)
    out = long.assign(ratio=ratio)
    return out[["rule", "unit", "workload", "recipe", "capacity", "router_label", "router", "ratio"]].reset_index(drop=True)


def performance_profile(medians: pd.DataFrame, taus=None) -> pd.DataFrame:
    """rho(tau) per (rule, unit, router_label): the fraction of workloads with ratio <= tau.

    The profile workloads are (workload, recipe, capacity); a router absent
    from a workload counts as not reached there (ratio inf), as in AlgoPerf.
    `taus` defaults to 1.00, 1.25, ..., 4.00.
    """
    taus = np.round(np.arange(1.0, 4.0001, 0.25), 6) if taus is None else np.asarray(taus, float)
    ratios = profile_ratios(medians)
    rows = []
    for (rule, unit), group in ratios.groupby(["rule", "unit"], sort=False):
        group = group.assign(_w=group["workload"] + "|" + group["recipe"] + "|" + group["capacity"].astype(str))
        table = group.pivot_table(index="_w", columns="router_label", values="ratio", aggfunc="first", dropna=False)
        table = table.fillna(np.inf)  # absent from a workload: not reached
        routers = group.drop_duplicates("router_label").set_index("router_label")["router"]
        ratio = table.to_numpy()  # (workloads, routers)
        fraction = (ratio[:, :, None] <= taus[None, None, :]).mean(axis=0)  # (routers, taus)
        for j, label in enumerate(table.columns):
            rows.append(pd.DataFrame({"rule": rule, "unit": unit, "router": routers[label], "router_label": label,
                                      "tau": taus, "fraction": fraction[j], "n_workloads": ratio.shape[0]}))
    columns = ["rule", "unit", "router", "router_label", "tau", "fraction", "n_workloads"]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    if out.empty:
        return out
    out["_r"] = out["rule"].map(RULES.index)
    out["_u"] = out["unit"].map(UNITS.index)
    out["_k"] = out["router"].map(lambda r: router_rank(r))
    return (out.sort_values(["_r", "_u", "_k", "router_label", "tau"], kind="stable")
            .drop(columns=["_r", "_u", "_k"]).reset_index(drop=True))
