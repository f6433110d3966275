"""Report figures, seaborn over matplotlib. Each function returns the figure (or FacetGrid) unsaved.

* `convergence_figure`: val top-1 vs epochs / training GMACs / wall-clock,
  one facet per (stage, model, dataset, recipe, capacity) that has curves,
  wrapped at 3 columns; mean over seeds with a 95% Student-t band; the common
  target as a dotted horizontal line (gid "target").
* `isoflop_figure`: best top-1 vs inference GMACs per image, one marker per
  router (color) and capacity (marker), 95% t error bars over seeds, the Pareto
  frontier as a dashed step line (gid "pareto").
* `speedup_figure`: time-to-target speedup bars, rows = unit, columns =
  target rule, x = workload / capacity / baseline, with the bootstrap CIs as
  error bars and a line at 1.
* `profile_figure`: AlgoPerf performance profiles, one panel per unit,
  line style = target rule.
* `forest_figure`: the verdict's effects, meta-analysis style: one row per
  comparison, one panel per measure, the CI as a bar (gid "ci"), the
  no-effect line (gid "no_effect"; 0 for differences, 1 on a log axis for
  speedups).
* `zero_shot_figure`: step-0 top-1 per router and capacity with CI bars, the
  parent's accuracy on the same split as a dashed line (gid "parent").

Colors are fixed per router (each router's declared `colour`) across all figures. Dense
curves and points are repeated in every capacity facet they are compared in;
a workload with dense only (e.g. pretraining) gets a single dense facet.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.container  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .accuracy import t_halfwidth  # noqa: E402
from .convergence import TARGET_KEYS  # noqa: E402
from amod_bench.routers.traits import router_colour as router_color  # noqa: E402

from .groups import at_compared_capacities, display_name, router_rank  # noqa: E402
from .load import UNITS  # noqa: E402

X_UNITS = {  # convergence x axis -> (column, axis label)
    "epoch": ("epoch", "epochs"),
    "gmacs": ("train_gmacs", "training GMACs (cumulative)"),
    "seconds": ("train_seconds", "training seconds (wall-clock)"),
}
UNIT_LABELS = {"epoch": "epochs", "step": "optimizer steps", "train_macs": "training MACs",
               "train_seconds": "wall-clock seconds"}


def router_order(routers) -> list[str]:
    return sorted(set(routers), key=router_rank)


def label_palette(labels: pd.DataFrame) -> dict[str, tuple]:
    """router_label -> color: the router's color, shaded apart when a router has several labels."""
    palette = {}
    for router, group in labels.drop_duplicates("router_label").groupby("router", sort=False):
        base = mcolors.to_rgb(router_color(router))
        names = sorted(group["router_label"])
        for i, name in enumerate(names):
            mix = 0.0 if i == 0 else 0.55 * i / len(names)  # lighter towards white
            palette[name] = tuple(c + (1 - c) * mix for c in base)
    return palette


def label_order(frame: pd.DataFrame) -> list[str]:
    pairs = frame.drop_duplicates("router_label")[["router", "router_label"]].itertuples(index=False)
    return [label for _, label in sorted(pairs, key=lambda p: (router_rank(p[0]), p[1]))]


def _style_column(frame: pd.DataFrame) -> pd.Series:
    """Line style key: the router axes that tell variants of one router apart ("-" if none); recipes are rows."""
    extra = frame["router_label"].str.partition(" (")[2].str.rstrip(")")
    return extra.where(extra != "", "-")


def panel_labels(frame: pd.DataFrame) -> pd.Series:
    """Row label of a facet: model / dataset, plus stage and recipe when they vary."""
    parts = [frame["model"] + " / " + frame["dataset"]]
    if frame["stage"].nunique() > 1:
        parts.insert(0, frame["stage"])
    label = parts[0] if len(parts) == 1 else parts[0] + " / " + parts[1]
    return label.where(frame["recipe"] == "", label + " / " + frame["recipe"])


def _cap_label(c: float) -> str:
    return f"{c:g}"


def wrap_parts(parts, width: int = 48, sep: str = " · ") -> str:
    """Join title parts with `sep`, breaking onto a new line (at a separator) before `width` characters."""
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(sep) + len(part) > width:
            lines.append(line)
            line = part
        else:
            line = part if not line else line + sep + part
    return "\n".join(lines + [line])


def facet_titles(frame: pd.DataFrame) -> pd.Series:
    """Convergence facet key and title: "stage · model · dataset[ · recipe]" over "C = x" (wrapped to fit)."""
    rows = frame[["stage", "model", "dataset", "recipe", "capacity"]].drop_duplicates()
    titles = {
        key: wrap_parts([str(v) for v in key[:3]] + ([key[3]] if key[3] else [])) + "\nC = " + _cap_label(key[4])
        for key in rows.itertuples(index=False, name=None)}
    keys = frame[["stage", "model", "dataset", "recipe", "capacity"]].itertuples(index=False, name=None)
    return pd.Series([titles[k] for k in keys], index=frame.index, dtype=object)


def convergence_data(cells: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Evals of the ok cells with grouping columns, dense rows repeated per capacity, aligned x columns.

    Seeds are aligned on epoch: at each (variant, epoch) the GMACs and seconds
    x values are replaced by their mean over seeds, so the mean val_top1 over
    seeds sits at one x (wall-clock differs between seeds).
    """
    keys = ["suite", "cell", "variant", "workload", "recipe", "stage", "model", "dataset", "router",
            "router_label", "capacity", "seed"]
    data = evals.merge(cells.loc[cells["ok"], keys], on=["suite", "cell"], how="inner")
    data = data[np.isfinite(data["val_top1"])].copy()
    if data.empty:  # no finished cell (every one failed, say): nothing to draw
        return data
    data["train_gmacs"] = data["train_macs"] / 1e9
    data["epoch_key"] = data["epoch"].round(6)
    for column in ("train_gmacs", "train_seconds"):
        data[column] = data.groupby(["variant", "epoch_key"])[column].transform("mean")
    data = at_compared_capacities(data)
    data["panel"] = panel_labels(data)
    data["cap"] = data["capacity"].map(_cap_label)
    data["facet"] = facet_titles(data)
    data["style"] = _style_column(data)
    return data


def _curves(data: pd.DataFrame, column: str, level: float) -> pd.DataFrame:
    """Mean over seeds at each (facet, router, style, eval) with its t interval (`low`, `high`)."""
    keys = ["facet", "panel", "cap", "capacity", "router", "style", "epoch_key"]
    agg = data.groupby(keys, sort=True).agg(x=(column, "mean"), val_top1=("val_top1", "mean"),
                                            std=("val_top1", "std"), n=("val_top1", "size")).reset_index()
    half = t_halfwidth(agg["std"], agg["n"], level)
    return agg.assign(low=agg["val_top1"] - half, high=agg["val_top1"] + half).rename(columns={"x": column})


def _bands(grid, curves: pd.DataFrame, x: str) -> None:
    """The CI band of each curve, in its router's color (straight onto the facets: no extra grid layout pass)."""
    for (facet, router, _style), curve in curves.groupby(["facet", "router", "style"], sort=True):
        if curve["low"].notna().any():
            grid.axes_dict[facet].fill_between(curve[x], curve["low"], curve["high"], alpha=0.2, linewidth=0,
                                                      color=router_color(router), gid="band")


def _legend_right(grid) -> None:
    """Move the grid's legend to the right of the facets, widening the figure just enough.

    seaborn's own `legend_out` draws the whole figure twice to measure the
    legend; measuring the legend alone costs a fraction of that.
    """
    if grid.legend is None:
        return
    sns.move_legend(grid, "center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig = grid.figure
    width, height = fig.get_size_inches()
    legend_width = grid.legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi + 0.1
    fig.set_size_inches(width + legend_width, height)
    fig.subplots_adjust(right=fig.subplotpars.right * width / (width + legend_width))
    grid.legend.set_bbox_to_anchor((width / (width + legend_width), 0.5), transform=fig.transFigure)


def _suptitle(fig, text: str, title_lines: int = 1) -> None:
    """A title above the facets (whose titles have up to `title_lines` lines), inside the figure."""
    height = fig.get_figheight()
    fig.subplots_adjust(top=1 - (0.55 + 0.17 * (title_lines - 1)) / height)
    fig.suptitle(text, x=(fig.subplotpars.left + fig.subplotpars.right) / 2, y=1 - 0.1 / height, va="top")


def convergence_figure(data: pd.DataFrame, targets: pd.DataFrame, x: str = "epoch", level: float = 0.95):
    """FacetGrid of val top-1 curves; `data` from `convergence_data`, `targets` from `common_targets`.

    One facet per (stage, model, dataset, recipe, capacity) that has curves
    (no empty panels), wrapped at 3 columns, titled "stage · model · dataset"
    over "C = x"; facets of one workload share their y range. The mean and t
    band are computed here (vectorised) and drawn by seaborn (lines) and
    fill_between (bands), one line per (router, style) and facet.
    """
    column, xlabel = X_UNITS[x]
    curves = _curves(data, column, level)
    hue_order = router_order(curves["router"])
    styles = sorted(curves["style"].unique())
    facets = curves.drop_duplicates("facet").sort_values(["panel", "capacity"])
    facet_order = facets["facet"].tolist()
    grid = sns.relplot(
        data=curves, x=column, y="val_top1", hue="router", hue_order=hue_order,
        palette={r: router_color(r) for r in hue_order},
        style="style" if len(styles) > 1 else None, style_order=styles if len(styles) > 1 else None,
        col="facet", col_order=facet_order, col_wrap=min(3, len(facet_order)),
        kind="line", errorbar=None, height=2.8, aspect=1.35,
        facet_kws={"sharex": False, "sharey": False, "legend_out": False},
    )
    _legend_right(grid)
    _bands(grid, curves, column)
    for facet, ax in grid.axes_dict.items():
        ax.set_title(facet, fontsize="medium")
    grid.set_axis_labels(xlabel, "val top-1 (%)")
    for ax in grid.axes.flat:  # col_wrap hides inner tick labels' axis labels unevenly: label every facet's x
        ax.set_xlabel(xlabel)
        ax.tick_params(labelbottom=True, labelleft=True)
    facet_target = data.merge(targets, on=TARGET_KEYS).groupby("facet")["common_target"].first()
    for facet, ax in grid.axes_dict.items():
        target = facet_target.get(facet, np.nan)
        if np.isfinite(target):
            ax.axhline(target, color="black", linestyle=":", linewidth=1.0, label="common target", gid="target")
    for _, group in facets.groupby("panel", sort=False):  # one y range per workload
        axes = [grid.axes_dict[f] for f in group["facet"]]
        lows, highs = zip(*(ax.get_ylim() for ax in axes))
        for ax in axes:
            ax.set_ylim(min(lows), max(highs))
    lines = max(f.count("\n") + 1 for f in facet_order)
    grid.figure.subplots_adjust(hspace=0.3 + 0.12 * lines, wspace=0.25)
    _suptitle(grid.figure, f"val top-1 vs {xlabel}; mean over seeds, {level:.0%} t band", lines)
    return grid


def pareto_front(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points not dominated (no other point has <= cost and > accuracy), by increasing cost."""
    order = np.lexsort((-y, x))
    xs, ys, best = [], [], -np.inf
    for i in order:
        if y[i] > best:
            xs.append(x[i]), ys.append(y[i])
            best = y[i]
    return np.array(xs), np.array(ys)


def isoflop_figure(table: pd.DataFrame, level: float = 0.95):
    """Best top-1 vs inference GMACs per image, one panel per workload; `table` from accuracy_table."""
    data = table.dropna(subset=["gmacs", "top1_mean"]).copy()
    data["panel"] = panel_labels(data)
    data["cap"] = "C=" + data["capacity"].map(_cap_label)
    panels = sorted(data["panel"].unique())
    caps = sorted(data["cap"].unique(), key=lambda s: float(s[2:]))
    hue_order = router_order(data["router"])
    n = max(1, len(panels))
    width = 4.6 * n + 2.2  # 2.2 in on the right for the legend
    fig, axes = plt.subplots(1, n, figsize=(width, 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        sub = data[data["panel"] == panel]
        sns.scatterplot(data=sub, x="gmacs", y="top1_mean", hue="router", hue_order=hue_order,
                        palette={r: router_color(r) for r in hue_order}, style="cap", style_order=caps,
                        s=60, ax=ax, legend=panel == panels[-1], zorder=3)
        bars = sub[np.isfinite(sub["top1_ci_low"])]
        for router, group in bars.groupby("router", sort=True):
            mean = group["top1_mean"].to_numpy()
            ax.errorbar(group["gmacs"], mean, yerr=[mean - group["top1_ci_low"], group["top1_ci_high"] - mean],
                        fmt="none", ecolor=router_color(router), capsize=3, linewidth=1, zorder=2, gid="ci")
        fx, fy = pareto_front(sub["gmacs"].to_numpy(float), sub["top1_mean"].to_numpy(float))
        ax.plot(fx, fy, drawstyle="steps-post", color="black", linestyle="--", linewidth=1,
                label="Pareto frontier", gid="pareto", zorder=1)
        ax.set_title(panel)
        ax.set_xlabel("inference GMACs per image")
        ax.set_ylabel("best top-1 (%), mean over seeds")
    fig.tight_layout(rect=(0, 0, 1 - 2.2 / width, 1 - 0.45 / 3.8))
    legend = axes[0][len(panels) - 1].get_legend() if panels else None
    if legend is not None:
        handles, labels = axes[0][len(panels) - 1].get_legend_handles_labels()
        legend.remove()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1 - 2.1 / width, 0.5), fontsize="small",
                   frameon=False)
    fig.suptitle("isoFLOP accuracy: best-epoch top-1 vs inference GMACs per image", y=1 - 0.1 / 3.8, va="top",
                 x=(1 - 2.2 / width) / 2)
    return fig


def speedup_figure(table: pd.DataFrame, level: float = 0.95):
    """Speedup bars with bootstrap-CI error bars: rows = unit, columns = target rule.

    x = workload / capacity / baseline, hue = router. Non-finite or zero
    speedups (one side never reached the target) are left out of the bars; the
    speedup tables list them. Returns None when nothing is finite.
    """
    data = table[np.isfinite(table["speedup"]) & (table["speedup"] > 0)].copy()
    if data.empty:
        return None
    data["_b"] = data["baseline"].map(lambda r: router_rank(r))
    data = data.sort_values(["workload", "recipe", "capacity", "_b", "baseline_label"], kind="stable")
    # one tick label line per part (workload parts, capacity, baseline) so neighbouring labels do not overlap
    data["where"] = (panel_labels(data).str.replace(" / ", "\n") + "\nC=" + data["capacity"].map(_cap_label)
                     + "\nvs " + data["baseline_label"])
    order = list(dict.fromkeys(data["where"]))
    labels = label_order(data)
    palette = label_palette(data)
    units = [u for u in UNIT_LABELS if u in set(data["unit"])]
    rules = [r for r in ("peak", "common") if r in set(data["rule"])]
    chars = max(len(line) for where in order for line in where.split("\n"))
    width = max(0.055 * len(order) * len(labels) * 2.8,  # bars
                0.075 * (chars + 3) * len(order),  # x-small tick labels side by side, with a gap
                6.5 / len(rules))  # room for the title
    grid = sns.catplot(data=data, x="where", y="speedup", hue="router_label", hue_order=labels, palette=palette,
                       order=order, row="unit", row_order=units, col="rule", col_order=rules, kind="bar",
                       errorbar=None, height=2.8, aspect=max(1.6, width / 2.8), sharey=False,
                       legend_out=False, saturation=1)  # full saturation: bar colors = palette (matched below)
    _legend_right(grid)
    color_to_label = {mcolors.to_hex(c): name for name, c in palette.items()}
    for (unit, rule), ax in grid.axes_dict.items():
        ax.axhline(1.0, color="black", linewidth=0.8, gid="parity")
        sub = data[(data["unit"] == unit) & (data["rule"] == rule)].set_index(["where", "router_label"])
        bars = [b for c in ax.containers if isinstance(c, matplotlib.container.BarContainer) for b in c]
        xs, ys, lows, highs = [], [], [], []
        for bar in bars:
            label = color_to_label.get(mcolors.to_hex(bar.get_facecolor()))
            x = bar.get_x() + bar.get_width() / 2
            key = (order[int(round(x))], label)  # bars are dodged by < 0.5 around their category
            if key in sub.index and np.isfinite(sub.loc[key, "ci_low"]):
                row = sub.loc[key]
                xs.append(x), ys.append(row["speedup"]), lows.append(row["ci_low"]), highs.append(row["ci_high"])
        if xs:
            ys = np.array(ys)
            ax.errorbar(xs, ys, yerr=[ys - np.array(lows), np.array(highs) - ys], fmt="none", ecolor="black",
                        capsize=2, linewidth=0.8, gid="ci")
        ax.set_xlabel("")
        ax.set_title(f"{UNIT_LABELS[unit]} | {rule} target")
        ax.tick_params(axis="x", labelsize="x-small")
    grid.set_ylabels("speedup (x)")
    _suptitle(grid.figure, f"time-to-target speedup (> 1: router faster), {level:.0%} bootstrap CI")
    return grid


def profile_figure(profile: pd.DataFrame):
    """Step curves rho(tau), one panel per unit; color = router, solid = common target, dashed = peak target."""
    if profile.empty:
        return None
    data = profile.assign(target=profile["rule"] + " target")
    labels = label_order(data)
    units = [u for u in UNIT_LABELS if u in set(data["unit"])]
    grid = sns.relplot(data=data, x="tau", y="fraction", hue="router_label", hue_order=labels,
                       palette=label_palette(data), style="target",
                       style_order=[f"{r} target" for r in ("common", "peak") if r in set(data["rule"])],
                       col="unit", col_order=units, kind="line", errorbar=None, drawstyle="steps-post",
                       height=2.8, aspect=1.1, facet_kws={"legend_out": False})
    _legend_right(grid)
    grid.set_titles(col_template="{col_name}")
    grid.set_axis_labels("tau (time / fastest router's time)", "fraction of workloads")
    for ax in grid.axes.flat:
        ax.set_ylim(-0.03, 1.03)
    _suptitle(grid.figure, "performance profiles")
    return grid


def _comparison_labels(effects: pd.DataFrame) -> pd.Series:
    """Forest row label: "[workload · ]C=x · A-MoD vs MoD"."""
    where = panel_labels(effects) + " · " if panel_labels(effects).nunique() > 1 else ""
    names = [f"{display_name(r, rl)} vs {display_name(b, bl)}" for r, rl, b, bl in
             effects[["router", "router_label", "baseline", "baseline_label"]].itertuples(index=False)]
    return where + "C=" + effects["capacity"].map(_cap_label) + " · " + pd.Series(names, index=effects.index)


def forest_figure(effects: pd.DataFrame, measures: dict[str, str], level: float = 0.95):
    """One row per comparison, one panel per measure in `measures` (column -> title); `effects` from verdict.effects.

    Points are the estimates, bars their CIs, colored by router; a CI running
    off to infinity (one side not reaching the target on some resamples) is
    drawn to the panel's edge; zero or infinite speedups are left out (the
    verdict table lists them). Returns None when there is nothing to draw.
    """
    data = effects[np.isfinite(effects["estimate"])].copy()
    data["row"] = _comparison_labels(data)
    panels = [m for m in measures if m in set(data["measure"])]
    if not panels:
        return None
    rows = list(dict.fromkeys(_comparison_labels(effects)))  # every comparison, in the verdict's order
    width = 2.6 * len(panels) + 0.075 * max(map(len, rows)) + 0.4
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 0.32 * len(rows) + 1.3), sharey=True, squeeze=False)
    for ax, measure in zip(axes[0], panels):
        sub = data[data["measure"] == measure]
        ratio = measure in UNITS  # a speedup: log axis, no effect at 1
        if ratio:
            sub = sub[(sub["estimate"] > 0) & np.isfinite(sub["estimate"])]
            ax.set_xscale("log")
        ax.axvline(1.0 if ratio else 0.0, color="black", linewidth=0.8, linestyle="--", gid="no_effect")
        y = sub["row"].map(rows.index).to_numpy(float)
        finite = np.concatenate([sub["estimate"], sub["ci_low"], sub["ci_high"]])
        finite = finite[np.isfinite(finite) & ((finite > 0) if ratio else True)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.5, 2.0)
        lo, hi = (min(lo, 1.0) / 1.3, max(hi, 1.0) * 1.3) if ratio else (min(lo, 0.0) - 1, max(hi, 0.0) + 1)
        low = np.clip(np.nan_to_num(sub["ci_low"].to_numpy(float), nan=np.nan, neginf=lo), lo, hi)
        high = np.clip(np.nan_to_num(sub["ci_high"].to_numpy(float), nan=np.nan, posinf=hi), lo, hi)
        colors = [router_color(r) for r in sub["router"]]
        ax.hlines(y, low, high, colors=colors, linewidth=2.2, gid="ci")
        ax.scatter(sub["estimate"], y, c=colors, s=22, zorder=3, edgecolors="black", linewidths=0.4)
        ax.set_xlim(lo, hi)
        if ratio:  # plain numbers at powers of 2 instead of 6 x 10^-1
            ax.set_xticks([t for t in 2.0 ** np.arange(-6, 7) if lo <= t <= hi], minor=False)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(measures[measure] + (" (x)" if ratio else " (points)"), fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), rows, fontsize="small")
    axes[0][0].set_ylim(len(rows) - 0.5, -0.5)  # first comparison on top
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    fig.suptitle(f"effects with {level:.0%} CIs: differences router - baseline (points), speedups baseline / "
                 "router time",
                 y=1 - 0.1 / fig.get_figheight(), va="top")
    return fig


def zero_shot_figure(table: pd.DataFrame, level: float = 0.95):
    """Step-0 top-1 (mean, CI bars) per capacity, one marker color per router, one panel per workload and recipe.

    `table` from zero_shot.zero_shot_table; the dense rows are the parent's
    reference (dashed line) rather than points. Returns None when empty.
    """
    data = table[table["router"] != "dense"].copy()
    if data.empty:
        return None
    data["panel"] = panel_labels(data)
    panels = sorted(data["panel"].unique())
    labels = label_order(data)
    palette = label_palette(data)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.8, 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        sub = data[data["panel"] == panel]
        caps = sorted(sub["capacity"].unique())
        step = 0.8 / len(labels)
        for i, label in enumerate(labels):
            arm = sub[sub["router_label"] == label]
            x = arm["capacity"].map(caps.index).to_numpy(float) - 0.4 + step * (i + 0.5)
            mean = arm["step0_mean"].to_numpy(float)
            err = np.array([mean - arm["step0_ci_low"], arm["step0_ci_high"] - mean])
            ax.errorbar(x, mean, yerr=np.where(np.isfinite(err), err, 0.0), fmt="o", color=palette[label],
                        capsize=3, label=label, gid="ci")
        parent = sub["parent_top1"].dropna()
        if len(parent):
            ax.axhline(parent.iloc[0], color=router_color("dense"), linestyle="--", linewidth=1,
                       label="parent, same split", gid="parent")
        ax.set_xticks(range(len(caps)), [f"C={_cap_label(c)}" for c in caps])
        ax.set_ylim(bottom=0)
        ax.set_title(panel)
        ax.set_ylabel("step-0 val top-1 (%)")
    handles, names = axes[0][-1].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 1 - 0.7 / 4.0))
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1 - 1.75 / fig.get_figwidth(), 0.5),
               fontsize="small", frameon=False)
    fig.suptitle(f"zero-shot: top-1 right after conversion, before any update\n(mean over seeds, {level:.0%} t CI)",
                 y=1 - 0.1 / 4.0, va="top")
    return fig


def close(fig) -> None:
    plt.close(getattr(fig, "figure", fig))


KINDS = {"convergence": convergence_figure, "isoflop": isoflop_figure, "speedup": speedup_figure,
         "profile": profile_figure, "forest": forest_figure, "zero_shot": zero_shot_figure}


def render(name: str, kind: str, kwargs: dict, folder) -> list:
    """Draw one figure (`KINDS[kind](**kwargs)`), save it as PNG + PDF under `folder`, close it.

    Returns the paths ([] if the figure had nothing to draw).
    """
    from .output import save_figure

    fig = KINDS[kind](**kwargs)
    if fig is None:
        return []
    try:
        return save_figure(getattr(fig, "figure", fig), folder, name)
    finally:
        close(fig)


__all__ = ["convergence_data", "convergence_figure", "isoflop_figure",
           "speedup_figure", "profile_figure", "forest_figure", "zero_shot_figure", "pareto_front", "router_color", "label_palette", "close", "render"]
