"""Build the whole report: tables (CSV + markdown), figures (PNG + PDF) and index.md.

    from amod_bench.report.build import ReportOptions, build_report
    report = build_report(["results/toy"], out=None, options=ReportOptions())

Output (default `results/<suite>/report/`; required `out` when several
folders are combined):

    index.md                    every table and figure, each with its definitions
    tables/<name>.csv|.md       full precision CSV, formatted markdown
    figures/<name>.png|.pdf

Reads files only (amod_bench.report.load); torch only inside the routing maps.
Deterministic: the same folders and options give byte-identical tables and
index.md (fixed bootstrap seed, no timestamps, stable row order).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import accuracy, convergence
from .groups import add_variant_columns, sort_frame
from .load import UNITS, Results, load_results
from .output import atomic_write_text, write_csv, write_markdown

MACS_NOTE = ('MACs are multiply-accumulates, reported as "FLOPs" as in the paper, timm and fvcore '
             "(true FLOPs = 2 x MACs)")
MAX_WARNINGS = 50  # read warnings listed in index.md (all of them are also raised as ReportWarning)
UNIT_NAMES = {"epoch": "epochs", "step": "steps", "train_macs": "train MACs", "train_seconds": "seconds"}


@dataclass
class ReportOptions:
    within: float | None = None  # X of the peak rule; None: each cell's targets.within_peak_pct (default 2)
    peak_mode: str = "points"  # "points": peak - X; "relative": peak * (1 - X/100)
    target_top1: float | None = None  # common target for every workload; None: targets.top1, else dense median best
    n_boot: int = 2000  # bootstrap resamples per speedup CI
    seed: int = 0  # bootstrap seed (each comparison derives its own stream from it)
    level: float = 0.95  # confidence level of every CI
    figures: bool = True
    routing_maps: bool = True
    n_images: int = 4  # validation images per routing map


@dataclass
class Report:
    out: Path
    results: Results
    tables: dict[str, Path] = field(default_factory=dict)  # name -> CSV path
    figures: dict[str, list[Path]] = field(default_factory=dict)  # name -> [PNG, PDF]
    messages: list[str] = field(default_factory=list)  # skipped pieces (routing maps, empty figures)


def default_out(folders: list[Path]) -> Path:
    if len(folders) != 1:
        raise ValueError("several results folders: give --out DIR for the combined report")
    return folders[0] / "report"


def _n_text(n: pd.Series) -> str:
    n = n.dropna().astype(int)
    if n.empty:
        return "seeds n = 0"
    return f"seeds n = {n.min()}" if n.min() == n.max() else f"seeds n = {n.min()}-{n.max()} (column n)"


def _ci_text(low: float, high: float, spec: str = ".2f") -> str:
    return "-" if np.isnan(low) or np.isnan(high) else f"[{low:{spec}}, {high:{spec}}]"


def _pm(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.2f}" if not np.isfinite(std) else f"{mean:.2f} ± {std:.2f}"


def _where(frame: pd.DataFrame) -> list[str]:
    """Columns that identify a row for display: only the keys that vary, plus router and capacity."""
    keys = [k for k in ("stage", "model", "dataset", "recipe") if k in frame and frame[k].nunique() > 1]
    if not keys:
        keys = ["model", "dataset"]
    return keys + ["router_label", "capacity"]


def _accuracy_md(table: pd.DataFrame) -> pd.DataFrame:
    show = table[_where(table) + ["n"]].copy()
    show["capacity"] = table["capacity"].map(lambda c: f"{c:g}")
    for m in ("top1", "top5"):
        show[f"{m} mean ± std"] = [_pm(a, b) for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"])]
        show[f"{m} 95% CI"] = [_ci_text(a, b) for a, b in zip(table[f"{m}_ci_low"], table[f"{m}_ci_high"])]
    show["GMACs"] = table["gmacs"].map(lambda v: f"{v:.4g}" if np.isfinite(v) else "-")
    show["vs isoflop"] = table["flop_ratio_isoflop"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "-")
    show["vs dense"] = table["flop_ratio_dense"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "-")
    return show


def _speedup_md(table: pd.DataFrame, rule: str) -> pd.DataFrame:
    sub = table[table["rule"] == rule]
    if sub.empty:
        return sub
    keys = _where(sub) + ["baseline_label", "n"]
    text = sub.assign(n=sub["n_router"].astype(str) + " vs " + sub["n_baseline"].astype(str), value=[
        "not reached by either" if np.isnan(s) and np.isinf(r) and np.isinf(b)
        else "router not reached" if s == 0 and np.isinf(r)
        else "baseline not reached" if np.isinf(s)
        else "-" if np.isnan(s)
        else f"{s:.2f} {_ci_text(lo, hi)}"
        for s, lo, hi, r, b in zip(sub["speedup"], sub["ci_low"], sub["ci_high"], sub["router_median"],
                                   sub["baseline_median"])])
    text["capacity"] = text["capacity"].map(lambda c: f"{c:g}")
    wide = text.pivot_table(index=keys, columns="unit", values="value", aggfunc="first", sort=False)
    wide = wide[[u for u in UNITS if u in wide.columns]].rename(columns=UNIT_NAMES).reset_index()
    return wide.rename(columns={"baseline_label": "baseline"})


def _ttt_md(medians: pd.DataFrame, rule: str) -> pd.DataFrame:
    sub = medians[medians["rule"] == rule]
    show = sub[_where(sub) + ["n", "reached", "target"]].copy()
    show["capacity"] = sub["capacity"].map(lambda c: f"{c:g}")
    show["reached"] = sub["reached"].astype(str) + "/" + sub["n"].astype(str)
    for unit in UNITS:
        spec = ".4g" if unit != "train_macs" else ".3e"
        show[UNIT_NAMES[unit]] = sub[unit].map(lambda v, s=spec: "not reached" if np.isinf(v) else
                                               ("-" if np.isnan(v) else format(v, s)))
    return show.drop(columns="n")


def _profile_md(profile: pd.DataFrame) -> pd.DataFrame:
    if profile.empty:
        return profile
    show = profile[profile["tau"].isin([1.0, 1.25, 1.5, 2.0, 3.0, 4.0])]
    wide = show.pivot_table(index=["rule", "unit", "router_label"], columns="tau", values="fraction",
                            aggfunc="first", sort=False)
    wide.columns = [f"tau={t:g}" for t in wide.columns]
    n = profile.groupby(["rule", "unit", "router_label"], sort=False)["n_workloads"].first()
    return wide.assign(workloads=n).reset_index()


def _flagged(cells: pd.DataFrame) -> pd.DataFrame:
    cols = ["suite", "cell", "router", "capacity", "seed", "status", "flag", "reason"]
    flagged = cells.loc[~cells["ok"], [c for c in cols if c in cells]]
    return flagged.sort_values(["suite", "cell"], kind="stable").reset_index(drop=True)


def _cells_table(cells: pd.DataFrame) -> pd.DataFrame:
    cols = ["suite", "cell", "stage", "model", "dataset", "router", "router_label", "capacity", "recipe", "seed",
            "status", "ok", "flag", "reason", "best_top1", "best_top5", "best_epoch", "final_top1", "final_top5",
            "gmacs", "total_train_seconds", "total_wall_seconds", "n_evals", "bad_lines", "checkpoint"]
    return cells[[c for c in cols if c in cells]].sort_values(["suite", "cell"], kind="stable").reset_index(drop=True)


class _Index:
    """index.md being assembled: sections of markdown, written once at the end."""

    def __init__(self):
        self.parts: list[str] = []

    def add(self, *lines: str) -> None:
        self.parts.extend(lines)

    def table(self, title: str, definition: str, name: str, md: str) -> None:
        self.add(f"## {title}", "", f"_{definition}_", "", md, f"CSV: [tables/{name}.csv](tables/{name}.csv)", "")

    def figure(self, title: str, caption: str, name: str) -> None:
        self.add(f"### {title}", "", f"_{caption}_", "", f"![{title}](figures/{name}.png)", "",
                 f"PDF: [figures/{name}.pdf](figures/{name}.pdf)", "")

    def text(self) -> str:
        return "\n".join(self.parts).rstrip() + "\n"


def _shown(path) -> str:
    """A path as index.md prints it: relative to the working directory when under it, so a
    committed report names its folders the same way on every clone."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def build_report(folders, out: Path | str | None = None, options: ReportOptions | None = None,
                 log=print) -> Report:
    """Read `folders`, write every table, figure and index.md under `out`; returns what was written."""
    options = options or ReportOptions()
    results = load_results(folders)
    out = Path(out) if out is not None else default_out(results.sources)
    report = Report(out=out, results=results)
    tables_dir = out / "tables"
    cells, router_axes, recipe_axes = add_variant_columns(results.cells, results.config_keys)
    index = _Index()

    # ---- definitions shared by several sections
    within_values = sorted(set(cells.loc[cells["ok"], "target_within_peak_pct"].fillna(2.0)))
    x_text = f"{options.within:g}" if options.within is not None else "/".join(f"{v:g}" for v in within_values) or "2"
    peak_rule = (f"peak rule: the cell's own peak val top-1 minus {x_text} percentage points (absolute)"
                 if options.peak_mode == "points" else
                 f"peak rule: the cell's own peak val top-1 x (1 - {x_text}/100) (relative)")
    crossing = ("time = first eval with val top-1 >= target, linearly interpolated between it and the eval "
                "before it, separately in each unit; never crossed = 'not reached'")
    boot = (f"speedup = median baseline time / median router time (> 1: router faster); "
            f"{options.level:.0%} percentile bootstrap CI, {options.n_boot} resamples, seed {options.seed}, "
            "seeds of both sides resampled independently; baselines matched on workload, recipe and capacity "
            "(dense: every capacity)")

    sources = ", ".join(f"`{_shown(p)}`" for p in results.sources)
    index.add("# amod-bench report", "", f"Results: {sources}. Cells: {len(cells)} "
              f"({int(cells['ok'].sum())} counted, {int((~cells['ok']).sum())} flagged). "
              f"Variant axes: router {router_axes or 'none'}, recipe {recipe_axes or 'none'}.", "",
              f"Conventions: accuracies are val top-1/top-5 in percent; {MACS_NOTE}; only finished cells "
              "(status done, with evals) enter means, medians, speedups and figures; "
              f"every CI is {options.level:.0%}. Regenerate with "
              f"`python bench.py report {' '.join(_shown(p) for p in results.sources)} --out {_shown(out)}`.", "")

    def table(name: str, frame: pd.DataFrame) -> None:
        report.tables[name] = write_csv(frame, tables_dir, name)

    # ---- flagged cells and read warnings
    flagged = _flagged(cells)
    table("flagged", flagged)
    index.table("Flagged cells", "Unfinished (running / no summary.json), failed, diverged, missing or unreadable "
                f"cells: kept in cells.csv, left out of every mean, median and figure ({len(flagged)} cells)",
                "flagged", write_markdown(flagged, tables_dir, "flagged"))
    if results.warnings:
        shown = results.warnings[:MAX_WARNINGS]
        more = len(results.warnings) - len(shown)
        index.add("Read warnings (lines or files skipped):", "", *[f"- `{w}`" for w in shown],
                  *([f"- ... and {more} more"] if more else []), "")
    cells_table = _cells_table(cells)
    table("cells", cells_table)
    write_markdown(cells_table, tables_dir, "cells")
    index.add("All cells, one row each (flags included): [tables/cells.csv](tables/cells.csv), "
              "[tables/cells.md](tables/cells.md).", "")

    # ---- accuracy
    acc = {}
    for which in ("best", "final"):
        acc[which] = accuracy.accuracy_table(cells, which, options.level)
        table(f"accuracy_{which}", acc[which])
        what = ("best-epoch (the paper's convention: max over evals, summary.json best_*)" if which == "best"
                else "final (last eval, summary.json final_*)")
        index.table(f"Accuracy ({which})", f"{what} val top-1/top-5 (%), mean ± sample std over seeds with "
                    f"{options.level:.0%} Student-t CI; {_n_text(acc[which]['n'])}; GMACs = inference MACs per image "
                    "/ 1e9 (config gmacs, MACs reported as FLOPs); 'vs isoflop'/'vs dense' = gmacs ratio to the "
                    "isoflop model of the same capacity / the full-depth dense model", f"accuracy_{which}",
                    write_markdown(_accuracy_md(acc[which]), tables_dir, f"accuracy_{which}"))

    # ---- convergence speed
    ttt = convergence.times_to_target(cells, results.evals, within=options.within, peak_mode=options.peak_mode,
                                      common_top1=options.target_top1)
    targets = convergence.common_targets(cells, options.target_top1)
    table("targets", targets)
    index.table("Targets", f"common rule (AlgoPerf-style): one val top-1 target per (stage, model, dataset): "
                "--target-top1, else the suite's targets.top1, else the median over seeds (for even n the lower "
                "middle value) of the full-depth dense model's best val top-1 (highest dense variant); "
                f"{peak_rule}", "targets", write_markdown(targets, tables_dir, "targets", {"common_target": ".4g"}))
    ttt_cells = sort_frame(ttt, ["rule", "seed", "cell"])
    table("time_to_target_cells", ttt_cells)
    write_markdown(ttt_cells, tables_dir, "time_to_target_cells")
    medians = convergence.median_times(ttt)
    table("time_to_target", medians)
    for rule, rule_text in (("peak", peak_rule), ("common", "common rule: the per-workload target above")):
        index.table(f"Time to target ({rule} rule)", f"median over seeds of the time to reach the target; "
                    f"{rule_text}; {crossing}; {_n_text(medians.loc[medians['rule'] == rule, 'n'])}; "
                    f"units: epochs, optimizer steps, cumulative training MACs (all ranks), wall-clock training "
                    f"seconds (evals excluded). Per cell: tables/time_to_target_cells.csv", "time_to_target",
                    write_markdown(_ttt_md(medians, rule), tables_dir, f"time_to_target_{rule}"))

    speed = convergence.speedups(ttt, n_boot=options.n_boot, seed=options.seed, level=options.level)
    table("speedup", speed)
    for rule in ("peak", "common"):
        n = speed.loc[speed["rule"] == rule, "n_router"]
        index.table(f"Speedup ({rule} rule)", f"{boot}; {rule} target; {crossing}; {_n_text(n)} "
                    "(n = router seeds vs baseline seeds)", "speedup",
                    write_markdown(_speedup_md(speed, rule), tables_dir, f"speedup_{rule}"))

    profile = convergence.performance_profile(medians)
    table("profile", profile)
    profile_def = ("performance profile (AlgoPerf): per (workload, recipe, capacity) each router's median "
                   "time-to-target over the fastest router's (dense included; not reached or absent = inf); "
                   "rho(tau) = fraction of those workloads with ratio <= tau")
    index.table("Performance profile", f"{profile_def}; {_n_text(medians['n'])}", "profile",
                write_markdown(_profile_md(profile), tables_dir, "profile"))

    # ---- figures
    if options.figures:
        _figures(report, index, cells, results, acc["best"], targets, speed, medians, options,
                 peak_rule, crossing, boot, profile_def, log)
    else:
        index.add("Figures not drawn (--no-figures).", "")
    if report.messages:
        index.add("## Skipped", "", *[f"- {m}" for m in report.messages], "")
    atomic_write_text(out / "index.md", index.text())
    return report


def _figures(report, index, cells, results, acc_best, targets, speed, medians, options, peak_rule, crossing,
             boot, profile_def, log) -> None:
    from . import figures  # matplotlib/seaborn only when figures are drawn
    from .output import save_figure

    figures_dir = report.out / "figures"

    def skip(message: str) -> None:
        report.messages.append(message)
        log(message)

    def add(name: str, kind: str, kwargs: dict, title: str, caption: str) -> None:
        report.figures[name] = figures.render(name, kind, kwargs, figures_dir)
        index.figure(title, caption, name)

    ok = cells[cells["ok"]]
    index.add("## Figures", "")
    data = figures.convergence_data(cells, results.evals)
    n = _n_text(ok.groupby("variant").size())
    if data.empty:
        skip("convergence curves: no finished cell with evals; skipped")
    else:
        for x, what in (("epoch", "epochs"), ("gmacs", "cumulative training GMACs"),
                        ("seconds", "wall-clock training seconds")):
            add(f"convergence_{x}", "convergence", dict(data=data, targets=targets, x=x, level=options.level),
                f"Convergence vs {what}",
                f"val top-1 vs {what}, rows = workload, columns = capacity (dense repeated in each); mean over "
                f"seeds with {options.level:.0%} t band, seeds aligned on epoch (x = mean over seeds at each eval); "
                f"dotted line = common target; {n}; {MACS_NOTE}")
    if acc_best.dropna(subset=["gmacs", "top1_mean"]).empty:
        skip("isoFLOP accuracy: no finished cell with gmacs; skipped")
    else:
        add("isoflop_accuracy", "isoflop", dict(table=acc_best, level=options.level), "isoFLOP accuracy",
            f"best-epoch top-1 vs inference GMACs per image (config gmacs; {MACS_NOTE}); color = router, "
            f"marker = capacity; error bars = {options.level:.0%} t CI over seeds; dashed = Pareto frontier; "
            f"{_n_text(acc_best['n'])}")
    if not (len(speed) and (np.isfinite(speed["speedup"]) & (speed["speedup"] > 0)).any()):
        skip("speedup bars: no finite speedup; skipped")
    else:
        add("speedup", "speedup", dict(table=speed, level=options.level), "Time-to-target speedup",
            f"{boot}; rows = unit, columns = target rule ({peak_rule}; common rule: per-workload target); "
            f"{crossing}; bars left out where one side never reached the target (see the speedup tables)")
    profile_fine = convergence.performance_profile(medians, taus=np.round(np.linspace(1.0, 4.0, 121), 6))
    if profile_fine.empty:
        skip("performance profile: no time-to-target; skipped")
    else:
        add("performance_profile", "profile", dict(profile=profile_fine), "Performance profile",
            f"{profile_def}; {peak_rule}; {crossing}")

    if not options.routing_maps:
        skip("routing maps: disabled (--no-routing-maps)")
        return
    from .routing_maps import routing_maps

    maps, messages = routing_maps(cells, options.n_images)
    for message in messages:
        skip(message)
    for name, fig, caption in maps:
        report.figures[name] = save_figure(fig, figures_dir, name)
        figures.close(fig)
        index.figure(f"Routing map: {name[len('routing_maps_'):]}", caption, name)
