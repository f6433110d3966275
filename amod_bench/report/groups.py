"""How cells group into variants (seeds pooled) and workloads (routers compared).

* A *workload* is (stage, model, dataset): the AlgoPerf-style common target is
  set per workload; speedups and performance profiles compare routers at one
  capacity of one workload with the same training recipe.
* A *variant* is a workload plus router, capacity and every grid axis of the
  suite (config.json's `axes`) on which two cells with the same workload,
  router, capacity and seed differ (an lr sweep, cls_policy, ...). Cells of one
  variant differ only by seed; means, medians and CIs are over them.
* The varying axes split into *router axes* (routed_layers, cls_policy: part
  of the router's label) and *recipe axes* (lr, epochs, ...: a router is only
  compared against baselines with the same recipe).

The full-depth dense model has capacity 1.0 (null in config becomes 1.0); it is
the dense baseline of every capacity of its workload: `at_compared_capacities`
repeats its rows at each of them wherever rows are compared per capacity
(targets, times to target, speedups, profiles, convergence facets).
"""
from __future__ import annotations

import pandas as pd

from amod_bench.routers.traits import router_names, router_traits, routers_in_display_order

BASELINES = ("dense", "isoflop", "mod")
WORKLOAD_KEYS = ["stage", "model", "dataset"]
ROUTER_AXES = ("routed_layers", "cls_policy")
BASE_KEYS = (*WORKLOAD_KEYS, "router", "capacity", "seed")  # a variant's own keys, never its axes


def display_name(router: str, router_label: str | None = None) -> str:
    """"A-MoD", or "A-MoD (cls_policy=keep)" for a router label with axes; unknown routers keep their name."""
    label = router if router_label is None else router_label
    name = router_traits(router).label if router in router_names() else router  # the papers' names
    return name + label[len(router):]


def router_rank(router: str) -> tuple[int, str]:
    """Sort key: the declaration order first, undeclared routers after, alphabetically."""
    order = [t.name for t in routers_in_display_order()]
    return (order.index(router), "") if router in order else (len(order), str(router))


def variant_axes(cells: pd.DataFrame) -> list[str]:
    """Grid axes (config.json `axes`), beyond the base keys, on which two cells of one
    (workload, router, capacity, seed) differ.

    An axis that differs only between routers (routed_layers null for dense) is a property of
    the router, and one that differs only between seeds is part of the seed; neither is a
    variant axis.
    """
    has_config = cells[~cells["flag"].isin(["missing", "no_config"])]
    if has_config.empty or "axes" not in has_config:
        return []
    declared = {a for axes in has_config["axes"] if isinstance(axes, tuple) for a in axes}
    base = [has_config[k].map(str) for k in BASE_KEYS]
    return [key for key in sorted(declared - set(BASE_KEYS)) if key in has_config
            and (has_config[key].map(str).groupby(base).nunique() > 1).any()]


def _label(row: pd.Series, keys: list[str]) -> str:
    """The values of `keys` that are grid axes of this cell's own stage: in a stage that takes its
    lr from a search (select), each arm's lr is part of the arm, not a variant of it."""
    own = row.get("axes")
    own = own if isinstance(own, tuple) else ()
    return ", ".join(f"{k}={row[k]}" for k in keys if k in own and pd.notna(row[k]))


def add_variant_columns(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Cells with `capacity` filled for dense and the grouping columns added.

    Adds `router_label` (router plus the router axes that vary, e.g.
    "amod (cls_policy=keep)"), `recipe` (the recipe axes that vary, "" if
    none), `workload` ("stage / model / dataset") and `variant` (a unique,
    sortable key). Returns (cells, router_axes, recipe_axes).
    """
    cells = cells.copy()
    axes = variant_axes(cells)
    router_axes = [a for a in axes if a in ROUTER_AXES]
    recipe_axes = [a for a in axes if a not in ROUTER_AXES]
    dense = cells["router"] == "dense"
    cells.loc[dense & cells["capacity"].isna(), "capacity"] = 1.0
    for key in WORKLOAD_KEYS + ["router"]:
        cells[key] = cells[key].astype(object).where(cells[key].notna(), "-").astype(str)
    routed = cells.apply(lambda r: _label(r, router_axes) if r["router"] != "dense" else "", axis=1) if len(cells) else []
    cells["router_label"] = [r if not extra else f"{r} ({extra})" for r, extra in zip(cells["router"], routed)]
    cells["recipe"] = cells.apply(lambda r: _label(r, recipe_axes), axis=1) if len(cells) else ""
    cells["workload"] = cells["stage"] + " / " + cells["model"] + " / " + cells["dataset"]
    cells["variant"] = (cells["workload"] + " | " + cells["router_label"] + " | C=" + cells["capacity"].map(_cap)
                        + " | " + cells["recipe"])
    return cells, router_axes, recipe_axes


def at_compared_capacities(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every dense row repeated at each capacity compared in its (workload, recipe).

    The compared capacities are those of the frame's other rows (routed and
    isoflop) with the same workload and recipe; a dense row of a workload with
    nothing else (a pretraining stage) keeps capacity 1.0. Row order: the
    non-dense rows, then the dense rows capacity by capacity.
    """
    dense = frame["router"] == "dense"
    others = frame[~dense]
    capacities = others.groupby(["workload", "recipe"])["capacity"].unique()
    parts = [others]
    for (workload, recipe), group in frame[dense].groupby(["workload", "recipe"], sort=False):
        caps = capacities.get((workload, recipe), [1.0])
        parts += [group.assign(capacity=c) for c in sorted(caps)]
    return pd.concat(parts, ignore_index=True)


def seeds_pair(router_seeds, baseline_seeds) -> bool:
    """True when two arms ran the same seeds, each once: seed s of one pairs with seed s of the other.

    Seeds are shared across arms (same data order and head initialisation),
    so paired statistics apply exactly then; otherwise the report falls back
    to unpaired ones and says so.
    """
    a, b = list(router_seeds), list(baseline_seeds)
    return len(a) > 0 and len(set(a)) == len(a) and sorted(a) == sorted(b)


def _cap(c) -> str:
    return "-" if pd.isna(c) else f"{c:g}"


def sort_frame(df: pd.DataFrame, extra: list[str] | None = None) -> pd.DataFrame:
    """Rows in report order: workload, recipe, capacity, router (fixed order), router_label, then `extra`."""
    keys = [k for k in ("workload", "recipe", "capacity") if k in df]
    df = df.assign(_rank=df["router"].map(lambda r: router_rank(r)[0]) if "router" in df else 0)
    keys += ["_rank"] + [k for k in ("router", "router_label", *(extra or [])) if k in df]
    return df.sort_values(keys, kind="stable", na_position="last").drop(columns="_rank").reset_index(drop=True)
