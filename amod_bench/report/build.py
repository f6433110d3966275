"""Build the whole report: tables (CSV + markdown), figures (PNG + PDF) and index.md.

    from amod_bench.report.build import ReportOptions, build_report
    report = build_report(["results/toy"], out=None, options=ReportOptions())

Output (default `results/<suite>/report/`; required `out` when several
folders are combined):

    index.md                    the verdict first (every comparison with CIs, and its forest plot),
                                then the figures, then the detailed tables, each with a line on
                                how to read it and its definitions
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

from . import accuracy, convergence, markdown, verdict, zero_shot
from .groups import add_variant_columns, sort_frame
from .importance import importance_section
from .load import Results, load_results
from .output import atomic_write_text, write_csv, write_markdown

MACS_NOTE = ('MACs are multiply-accumulates, reported as "FLOPs" as in the paper, timm and fvcore '
             "(true FLOPs = 2 x MACs)")
MAX_WARNINGS = 50  # read warnings listed in index.md (all of them are also raised as ReportWarning)


@dataclass
class ReportOptions:
    within: float | None = None  # X of the peak rule; None: each cell's targets.within_peak_pct (default 2)
    peak_mode: str = "points"  # "points": peak - X; "relative": peak * (1 - X/100)
    target_top1: float | None = None  # common target for every workload; None: targets.top1, else common_rule
    common_rule: str | None = None  # convergence.COMMON_RULES; None: each suite's targets.common_rule (default lowest)
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


def _flagged(cells: pd.DataFrame) -> pd.DataFrame:
    cols = ["suite", "cell", "router", "capacity", "seed", "status", "flag", "reason"]
    flagged = cells.loc[~cells["ok"], [c for c in cols if c in cells]]
    return flagged.sort_values(["suite", "cell"], kind="stable").reset_index(drop=True)


def _overhead(cells: pd.DataFrame) -> str:
    """A line on Ray's per-cell start-up against training and evaluation time, or '' (results
    written before summaries recorded it)."""
    if "startup_seconds" not in cells:
        return ""
    ok = cells[cells["ok"]]
    parts = []
    for suite, group in ok.groupby("suite", sort=True):
        startup = pd.to_numeric(group["startup_seconds"], errors="coerce").dropna()
        if startup.empty:
            continue
        spent = [f"{what} {pd.to_numeric(group[column], errors='coerce').median():.1f} s"
                 for what, column in (("training", "total_train_seconds"), ("evaluation", "total_eval_seconds"))
                 if column in group]
        parts.append(f"{suite}: {startup.median():.1f} s (n = {len(startup)}; {', '.join(spent)})")
    if not parts:
        return ""
    return ("Ray start-up per cell, median over finished cells (from the trial's start, or the end of the "
            "cells it waited for, to its first training step; startup_seconds in the cells table): "
            + "; ".join(parts) + ".")


def _skipping(cells: pd.DataFrame) -> str:
    """A line on the cells that skipped unreadable samples (recipe on_error: skip), or ''."""
    counts = {c: pd.to_numeric(cells[c], errors="coerce").fillna(0) for c in ("train_skipped", "val_skipped")
              if c in cells}
    if not counts or not any((v > 0).any() for v in counts.values()):
        return ""
    which = sum(counts.values()) > 0
    listed = ", ".join(f"`{cell}` ({', '.join(f'{int(counts[c][i])} {c}' for c in counts)})"
                       for i, cell in cells.loc[which, "cell"].items())
    return (f"Skipped samples: {int(which.sum())} cells trained or evaluated without unreadable samples "
            f"(recipe on_error: skip; train_skipped over the whole run, val_skipped in the last evaluation): "
            f"{listed}.")


def _cells_table(cells: pd.DataFrame) -> pd.DataFrame:
    cols = ["suite", "cell", "stage", "model", "dataset", "router", "router_label", "capacity", "recipe", "seed",
            "status", "ok", "flag", "reason", "best_top1", "best_top5", "best_epoch", "final_top1", "final_top5",
            "gmacs", "total_train_seconds", "startup_seconds", "total_wall_seconds", "n_evals",
            "train_skipped", "val_skipped",
            "bad_lines", "checkpoint"]
    return cells[[c for c in cols if c in cells]].sort_values(["suite", "cell"], kind="stable").reset_index(drop=True)


class _Index:
    """index.md being assembled: a header, then one list of markdown lines per section, in SECTIONS order.

    Each piece goes to its section whenever it is computed, so a new analysis
    adds its table to "tables" and its figure to "figures" without caring
    about the order of the code. Empty sections are left out.
    """

    SECTIONS = {"verdict": "Verdict", "figures": "Figures", "tables": "Detailed tables", "skipped": "Skipped"}

    def __init__(self):
        self.head: list[str] = []
        self.sections: dict[str, list[str]] = {name: [] for name in self.SECTIONS}

    def add(self, section: str, *lines: str) -> None:
        self.sections[section].extend(lines)

    def table(self, section: str, title: str, how: str, definition: str, name: str, md: str) -> None:
        """A table: its title, one line on how to read it, its definitions, the markdown, the CSV link."""
        self.add(section, f"### {title}", "", f"How to read: {how}", "", f"_{definition}_", "", md,
                 f"CSV: [tables/{name}.csv](tables/{name}.csv)", "")

    def figure(self, section: str, title: str, caption: str, name: str) -> None:
        self.add(section, f"### {title}", "", f"_{caption}_", "", f"![{title}](figures/{name}.png)", "",
                 f"PDF: [figures/{name}.pdf](figures/{name}.pdf)", "")

    def text(self) -> str:
        parts = list(self.head)
        for name, title in self.SECTIONS.items():
            if self.sections[name]:
                parts += [f"## {title}", "", *self.sections[name]]
        return "\n".join(parts).rstrip() + "\n"


def _shown(path) -> str:
    """A path as index.md prints it: relative to the working directory when under it, so a
    committed report names its folders the same way on every clone."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


RULE_TEXT = {
    "lowest": "the lowest median-over-seeds best val top-1 among the arms compared at that capacity (dense "
              "included), so every arm reaches it on most seeds",
    "every_run": "the lowest best val top-1 of any run compared at that capacity (dense included), so every run "
                 "reaches it and every speedup CI is bounded",
    "dense": "the full-depth dense model's median-over-seeds best val top-1 (one per stage, model and dataset)",
}


def _target_text(options: ReportOptions, cells: pd.DataFrame) -> str:
    if options.target_top1 is not None:
        return f"common target: {options.target_top1:g}% val top-1 for every workload (--target-top1)"
    rules = convergence.rules_in_use(cells, rule=options.common_rule)
    rule = "; or ".join(f"{RULE_TEXT[r]}" + (f" (targets.common_rule {r})" if len(rules) > 1 else "")
                        for r in rules) or RULE_TEXT[convergence.DEFAULT_COMMON_RULE]
    return (f"common target (tables/targets.csv), one per stage, model, dataset, recipe and capacity: the suite's "
            f"targets.top1 if set, else {rule} (for even n the lower middle value)")


def build_report(folders, out: Path | str | None = None, options: ReportOptions | None = None,
                 log=print) -> Report:
    """Read `folders`, write every table, figure and index.md under `out`; returns what was written."""
    options = options or ReportOptions()
    results = load_results(folders)
    out = Path(out) if out is not None else default_out(results.sources)
    report = Report(out=out, results=results)
    tables_dir = out / "tables"
    cells, router_axes, recipe_axes = add_variant_columns(results.cells)
    index = _Index()
    level = f"{options.level:.0%}"

    # ---- definitions shared by several sections
    within_values = sorted(set(cells.loc[cells["ok"], "target_within_peak_pct"].fillna(2.0)))
    x_text = f"{options.within:g}" if options.within is not None else "/".join(f"{v:g}" for v in within_values) or "2"
    peak_rule = (f"peak rule: the cell's own peak val top-1 minus {x_text} percentage points (absolute)"
                 if options.peak_mode == "points" else
                 f"peak rule: the cell's own peak val top-1 x (1 - {x_text}/100) (relative)")
    crossing = ("time = first eval with val top-1 >= target, linearly interpolated between it and the eval "
                "before it, separately in each unit; never crossed = 'not reached'")
    boot = (f"speedup = median baseline time / median router time (> 1: router faster); {level} percentile "
            f"bootstrap CI, {options.n_boot} resamples, seed {options.seed}, paired by seed when both arms ran "
            "the same seeds, else both sides resampled independently (column method); baselines matched on "
            "workload, recipe and capacity (dense: every capacity)")
    target_text = _target_text(options, cells)

    sources = ", ".join(f"`{_shown(p)}`" for p in results.sources)
    n_flagged = int((~cells["ok"]).sum())
    index.head += ["# amod-bench report", "", f"Results: {sources}. Cells: {len(cells)} "
                   f"({int(cells['ok'].sum())} counted, {n_flagged} flagged"
                   f"{': see Flagged cells under Detailed tables' if n_flagged else ''}). "
                   f"Variant axes: router {router_axes or 'none'}, recipe {recipe_axes or 'none'}.", "",
                   f"Conventions: accuracies are val top-1/top-5 in percent; {MACS_NOTE}; only finished cells "
                   "(status done, with evals) enter means, medians, speedups and figures; "
                   f"every CI is {level}. Regenerate with "
                   f"`python bench.py report {' '.join(_shown(p) for p in results.sources)} --out {_shown(out)}`.", ""]

    def table(name: str, frame: pd.DataFrame) -> None:
        report.tables[name] = write_csv(frame, tables_dir, name)

    # ---- computed first: everything the verdict rests on
    acc = {which: accuracy.accuracy_table(cells, which, options.level) for which in ("best", "final")}
    ttt = convergence.times_to_target(cells, results.evals, within=options.within, peak_mode=options.peak_mode,
                                      common_top1=options.target_top1, common_rule=options.common_rule)
    targets = convergence.common_targets(cells, options.target_top1, options.common_rule)
    medians = convergence.median_times(ttt)
    speed = convergence.speedups(ttt, n_boot=options.n_boot, seed=options.seed, level=options.level)
    step0 = zero_shot.step0_top1(cells, results.evals)
    zero = zero_shot.zero_shot_table(cells, results.evals, options.level)
    effects = verdict.effects(cells, step0, speed, options.level)

    # ---- the verdict
    table("verdict", effects)
    index.add("verdict", "Does each router train better or faster than its baselines? One row per comparison at one "
              "capacity (A-MoD vs MoD, isoFLOP and full-depth dense; every other routed arm vs MoD): accuracy "
              "differences router minus baseline in points, and time-to-target speedups (> 1: router faster).", "",
              "How to read: each cell is estimate [CI] and a word read off the CI alone: 'better'/'faster' when "
              "the whole CI lies above no effect (0 points, speedup 1), 'worse'/'slower' when it lies below, 'not "
              "resolved' when it contains it, 'too few seeds' below 2 seeds a side.", "",
              write_markdown(markdown.verdict_md(effects), tables_dir, "verdict"),
              f"Methods: accuracy columns are best-epoch, final and step-0 (zero-shot, before any update) val top-1; "
              f"their effect is the mean of the per-seed differences with a {level} paired t CI when both arms ran "
              "the same seeds (same data order and head init), else the difference of means with a Welch t CI. "
              f"Speedups are in epochs, training MACs and wall-clock training seconds to the {target_text}; "
              f"{boot}. With 3 seeds a bootstrap has 10 distinct resamples, so its CI spans about the per-seed "
              "range: 'faster' there means the seeds agree rather than a guarantee at the stated level. "
              "Every comparison and measure, with the method and seeds of its CI: "
              "[tables/verdict.csv](tables/verdict.csv)", "")

    # ---- detailed tables
    table("zero_shot", zero)
    index.table("tables", "Zero-shot adaptation (paper Table 3)",
                "each arm's accuracy right after conversion from the parent checkpoint, before any update; 'kept' "
                "is the fraction of the parent's accuracy on the same split that survives the conversion",
                f"step-0 val top-1 of the cells that start from a checkpoint (init_from), mean ± sample std over "
                f"seeds with {level} Student-t CI; parent = the parent's weights unrouted on the same validation "
                "split (the full-depth dense cells' step-0 eval; else the parent's own final eval when it used "
                f"the same dataset); kept = mean / parent; {markdown.n_text(zero['n'])}", "zero_shot",
                write_markdown(markdown.zero_shot_md(zero), tables_dir, "zero_shot"))
    for which in ("best", "final"):
        table(f"accuracy_{which}", acc[which])
        what = ("best-epoch (the paper's convention: max over evals, summary.json best_*)" if which == "best"
                else "final (last eval, summary.json final_*)")
        index.table("tables", f"Accuracy ({which})", "one row per arm; compare top-1 within a capacity, and the "
                    "GMACs ratios to see what each arm pays for it",
                    f"{what} val top-1/top-5 (%), mean ± sample std over seeds with {level} Student-t CI; "
                    f"{markdown.n_text(acc[which]['n'])}; GMACs = inference MACs per image / 1e9 (config gmacs, MACs "
                    "reported as FLOPs); 'vs isoflop'/'vs dense' = gmacs ratio to the isoflop model of the same "
                    "capacity / the full-depth dense model", f"accuracy_{which}",
                    write_markdown(markdown.accuracy_md(acc[which]), tables_dir, f"accuracy_{which}"))
    table("targets", targets)
    index.table("tables", "Targets", "the val top-1 each compared set must reach for the common-rule times below",
                f"{target_text}; rule selectable with --common-target lowest|dense; {peak_rule}", "targets",
                write_markdown(targets, tables_dir, "targets", {"common_target": ".4g"}))
    ttt_cells = sort_frame(ttt, ["rule", "seed", "cell"])
    table("time_to_target_cells", ttt_cells)
    write_markdown(ttt_cells, tables_dir, "time_to_target_cells")
    table("time_to_target", medians)
    for rule, rule_text in (("peak", peak_rule), ("common", "common rule: the per-capacity target above")):
        index.table("tables", f"Time to target ({rule} rule)", "lower is faster; 'reached' counts the seeds that "
                    "got there (the median is finite when most did)",
                    f"median over seeds of the time to reach the target; {rule_text}; {crossing}; "
                    f"{markdown.n_text(medians.loc[medians['rule'] == rule, 'n'])}; units: epochs, optimizer steps, "
                    "cumulative training MACs (all ranks), wall-clock training seconds (evals excluded); the dense "
                    "arm appears at every capacity it is compared at. Per cell: tables/time_to_target_cells.csv",
                    "time_to_target", write_markdown(markdown.ttt_md(medians, rule), tables_dir,
                                                     f"time_to_target_{rule}"))
    table("speedup", speed)
    for rule in ("peak", "common"):
        n = speed.loc[speed["rule"] == rule, "n_router"]
        index.table("tables", f"Speedup ({rule} rule)", "> 1: the router reaches the target sooner than the "
                    "baseline; a CI containing 1 does not resolve the order",
                    f"{boot}; {rule} target; {crossing}; {markdown.n_text(n)} (n = router seeds vs baseline seeds)",
                    "speedup", write_markdown(markdown.speedup_md(speed, rule), tables_dir, f"speedup_{rule}"))
    profile = convergence.performance_profile(medians)
    table("profile", profile)
    profile_def = ("performance profile (AlgoPerf): per (workload, recipe, capacity) each router's median "
                   "time-to-target over the fastest router's (dense included; not reached or absent = inf); "
                   "rho(tau) = fraction of those workloads with ratio <= tau")
    index.table("tables", "Performance profile", "higher and further left is better: the fraction of workloads "
                "where the router is within tau of the fastest", f"{profile_def}; {markdown.n_text(medians['n'])}",
                "profile", write_markdown(markdown.profile_md(profile), tables_dir, "profile"))

    flagged = _flagged(cells)
    table("flagged", flagged)
    index.table("tables", "Flagged cells", "cells left out of every statistic, and why",
                "Unfinished (running / no summary.json), failed, diverged, missing or unreadable "
                f"cells: kept in cells.csv, left out of every mean, median and figure ({len(flagged)} cells)",
                "flagged", write_markdown(flagged, tables_dir, "flagged"))
    if results.warnings:
        shown = results.warnings[:MAX_WARNINGS]
        more = len(results.warnings) - len(shown)
        index.add("tables", "Read warnings (lines or files skipped):", "", *[f"- `{w}`" for w in shown],
                  *([f"- ... and {more} more"] if more else []), "")
    cells_table = _cells_table(cells)
    table("cells", cells_table)
    write_markdown(cells_table, tables_dir, "cells")
    index.add("tables", "All cells, one row each (flags included): [tables/cells.csv](tables/cells.csv), "
              "[tables/cells.md](tables/cells.md).", "")
    for line in (_overhead(cells), _skipping(cells)):
        if line:
            index.add("tables", line, "")

    # ---- figures
    if options.figures:
        _figures(report, index, cells, results, dict(acc_best=acc["best"], targets=targets, speed=speed,
                                                     medians=medians, effects=effects, zero=zero),
                 options, dict(peak_rule=peak_rule, crossing=crossing, boot=boot, profile_def=profile_def), log)
    else:
        index.add("figures", "Figures not drawn (--no-figures).", "")

    # ---- token importance and routing diagnostics: the files `bench.py analyze importance` left, if any
    section = importance_section(results.sources, tables_dir, out / "figures" if options.figures else None)
    for piece in section.tables:
        report.tables[piece.name] = tables_dir / f"{piece.name}.csv"
        index.table("tables", piece.title, piece.how, piece.definition, piece.name, piece.markdown)
    for piece in section.figures:
        report.figures[piece.name] = piece.paths
        index.figure("figures", piece.title, f"How to read: {piece.how}. {piece.definition}", piece.name)
    report.messages += section.messages
    if report.messages:
        index.add("skipped", *[f"- {m}" for m in report.messages], "")
    atomic_write_text(out / "index.md", index.text())
    return report


def _figures(report, index, cells, results, frames: dict, options, texts: dict, log) -> None:
    from . import figures  # matplotlib/seaborn only when figures are drawn
    from .output import save_figure

    figures_dir = report.out / "figures"
    level = f"{options.level:.0%}"

    def skip(message: str) -> None:
        report.messages.append(message)
        log(message)

    def add(section: str, name: str, kind: str, kwargs: dict, title: str, caption: str) -> bool:
        paths = figures.render(name, kind, kwargs, figures_dir)
        if paths:
            report.figures[name] = paths
            index.figure(section, title, caption, name)
        return bool(paths)

    effects, zero, speed = frames["effects"], frames["zero"], frames["speed"]
    if effects.empty or not add("verdict", "forest", "forest",
                                dict(effects=effects, measures=verdict.MEASURES, level=options.level),
                                "Forest plot of the verdict",
                                f"one row per comparison (as in the verdict table), one panel per measure: point = "
                                f"estimate, bar = {level} CI (drawn to the panel's edge when it runs to infinity); "
                                "dashed = no effect (0 points; speedup 1, log axis); color = the router's; zero or "
                                "infinite speedups left out (see the table)"):
        skip("forest plot: no comparison with an estimate; skipped")
    ok = cells[cells["ok"]]
    data = figures.convergence_data(cells, results.evals)
    n = markdown.n_text(ok.groupby("variant").size())
    if data.empty:
        skip("convergence curves: no finished cell with evals; skipped")
    else:
        for x, what in (("epoch", "epochs"), ("gmacs", "cumulative training GMACs"),
                        ("seconds", "wall-clock training seconds")):
            add("figures", f"convergence_{x}", "convergence",
                dict(data=data, targets=frames["targets"], x=x, level=options.level),
                f"Convergence vs {what}",
                f"val top-1 vs {what}, rows = workload, columns = capacity (dense repeated in each); mean over "
                f"seeds with {level} t band, seeds aligned on epoch (x = mean over seeds at each eval); "
                f"dotted line = common target; {n}; {MACS_NOTE}")
    acc_best = frames["acc_best"]
    if acc_best.dropna(subset=["gmacs", "top1_mean"]).empty:
        skip("isoFLOP accuracy: no finished cell with gmacs; skipped")
    else:
        add("figures", "isoflop_accuracy", "isoflop", dict(table=acc_best, level=options.level), "isoFLOP accuracy",
            f"best-epoch top-1 vs inference GMACs per image (config gmacs; {MACS_NOTE}); color = router, "
            f"marker = capacity; error bars = {level} t CI over seeds; dashed = Pareto frontier; "
            f"{markdown.n_text(acc_best['n'])}")
    if not add("figures", "zero_shot", "zero_shot", dict(table=zero, level=options.level),
               "Zero-shot adaptation",
               f"step-0 val top-1 per router and capacity, mean over seeds with {level} t CI (zero width when "
               "every seed gives the same step-0 model); dashed = the parent's weights unrouted on the same split; "
               f"{markdown.n_text(zero['n'])}"):
        skip("zero-shot figure: no routed cell starts from a checkpoint; skipped")
    if not (len(speed) and (np.isfinite(speed["speedup"]) & (speed["speedup"] > 0)).any()):
        skip("speedup bars: no finite speedup; skipped")
    else:
        add("figures", "speedup", "speedup", dict(table=speed, level=options.level), "Time-to-target speedup",
            f"{texts['boot']}; rows = unit, columns = target rule ({texts['peak_rule']}; common rule: "
            f"per-capacity target); {texts['crossing']}; bars left out where one side never reached the target "
            "(see the speedup tables)")
    profile_fine = convergence.performance_profile(frames["medians"], taus=np.round(np.linspace(1.0, 4.0, 121), 6))
    if profile_fine.empty:
        skip("performance profile: no time-to-target; skipped")
    else:
        add("figures", "performance_profile", "profile", dict(profile=profile_fine), "Performance profile",
            f"{texts['profile_def']}; {texts['peak_rule']}; {texts['crossing']}")

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
        index.figure("figures", f"Routing map: {name[len('routing_maps_'):]}", caption, name)
