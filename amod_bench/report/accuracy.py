"""Accuracy over seeds, with the FLOP ratios of each routed model beside it.

`accuracy_table(cells, "best")` uses each cell's best-epoch top-1/top-5 (what
the paper reports); `"final"` uses the last eval. Per variant: n seeds, mean,
sample std (ddof=1) and a 95% Student-t interval, mean +- t(0.975, n-1) *
std / sqrt(n) (NaN for n = 1). Only `ok` cells count.

FLOP ratios use config.json `gmacs` (inference MACs per image / 1e9, the
paper's "FLOPs" convention): `flop_ratio_isoflop` = gmacs / gmacs of the
isoflop model of the same workload and capacity, `flop_ratio_dense` = gmacs /
gmacs of the full-depth dense model of the workload (config's own
`flop_ratio_dense` when no dense cell is loaded). Flagged cells still supply
gmacs: the FLOP count does not depend on how training went.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from .groups import WORKLOAD_KEYS, sort_frame

METRICS = ("top1", "top5")
WHICH = ("best", "final")


@lru_cache(maxsize=None)
def _t_quantile(df: int, level: float) -> float:
    from scipy.special import stdtrit  # scipy comes with scikit-learn; .special imports far faster than .stats

    return float(stdtrit(df, 0.5 + level / 2.0))


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """(low, high) Student-t confidence interval of the mean; (NaN, NaN) with fewer than 2 finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return (np.nan, np.nan)
    half = _t_quantile(v.size - 1, level) * v.std(ddof=1) / np.sqrt(v.size)
    mean = v.mean()
    return (float(mean - half), float(mean + half))


def welch_interval(a, b, level: float = 0.95) -> tuple[float, float]:
    """(low, high) Welch t confidence interval of mean(a) - mean(b), for unpaired samples.

    Welch-Satterthwaite degrees of freedom; when both samples are constant the
    interval is the difference itself (zero width; scipy's ttest_ind would warn
    and give NaN). (NaN, NaN) with fewer than 2 finite values on either side.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return (np.nan, np.nan)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size  # squared standard errors of the means
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return (diff, diff)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    from scipy.special import stdtrit

    half = float(stdtrit(df, 0.5 + level / 2.0)) * np.sqrt(va + vb)
    return (float(diff - half), float(diff + half))


def t_halfwidth(std, n, level: float = 0.95) -> np.ndarray:
    """Vectorised half-width t(0.5 + level/2, n-1) * std / sqrt(n); NaN where n < 2."""
    from scipy.special import stdtrit

    std, n = np.asarray(std, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stdtrit(np.where(n >= 2, n - 1, np.nan), 0.5 + level / 2.0)
        return q * std / np.sqrt(n)


def _gmacs_of(cells: pd.DataFrame, keys: list[str]) -> pd.Series:
    return cells.dropna(subset=["gmacs"]).groupby(keys, dropna=False)["gmacs"].median()


def flop_ratios(cells: pd.DataFrame) -> pd.DataFrame:
    """Per variant: `gmacs`, `flop_ratio_isoflop`, `flop_ratio_dense` (see the module docstring)."""
    with_gmacs = cells.dropna(subset=["gmacs"])
    per_variant = with_gmacs.groupby("variant")[["gmacs"]].median()
    meta = cells.drop_duplicates("variant").set_index("variant")
    iso = _gmacs_of(with_gmacs[with_gmacs["router"] == "isoflop"], WORKLOAD_KEYS + ["capacity"])
    dense = _gmacs_of(with_gmacs[with_gmacs["router"] == "dense"], WORKLOAD_KEYS)
    config_ratio = (cells.groupby("variant")["flop_ratio_dense"].median()
                    if "flop_ratio_dense" in cells else pd.Series(dtype=float))
    rows = []
    for variant, row in meta.iterrows():
        g = per_variant["gmacs"].get(variant, np.nan)
        wl = tuple(row[k] for k in WORKLOAD_KEYS)
        g_iso = iso.get((*wl, row["capacity"]), np.nan)
        g_dense = dense.get(wl, np.nan)
        ratio_dense = g / g_dense if np.isfinite(g_dense) else pd.to_numeric(config_ratio.get(variant), errors="coerce")
        rows.append({"variant": variant, "gmacs": g, "flop_ratio_isoflop": g / g_iso, "flop_ratio_dense": ratio_dense})
    return pd.DataFrame(rows, columns=["variant", "gmacs", "flop_ratio_isoflop", "flop_ratio_dense"])


def accuracy_table(cells: pd.DataFrame, which: str = "best", level: float = 0.95) -> pd.DataFrame:
    """One row per variant of the `ok` cells: n, mean, std, CI of `which` top-1 and top-5, plus FLOP ratios."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    keys = ["variant", "workload", *WORKLOAD_KEYS, "recipe", "capacity", "router", "router_label"]
    ok = cells[cells["ok"]]
    rows = []
    for key, group in ok.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key), n=len(group))
        for metric in METRICS:
            v = group[f"{which}_{metric}"].to_numpy(float)
            v = v[np.isfinite(v)]
            low, high = t_interval(v, level)
            row.update({f"{metric}_mean": v.mean() if v.size else np.nan,
                        f"{metric}_std": v.std(ddof=1) if v.size > 1 else np.nan,
                        f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        rows.append(row)
    columns = keys + ["n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")]
    table = pd.DataFrame(rows, columns=columns).merge(flop_ratios(cells), on="variant", how="left")
    table.insert(len(keys), "which", which)
    return sort_frame(table)
