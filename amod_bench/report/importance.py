"""Token importance (paper Fig. 7) and routing diagnostics in the report, read from files only.

`bench.py analyze importance RESULTS_DIR` writes `RESULTS_DIR/analysis/*.csv`
(`amod_bench.results` declares the names; definitions in `amod_bench.analysis.cli`);
this module turns those files into the report's tables and figure and never reruns a
model (no torch here):

    section = importance_section(results.sources, tables_dir, figures_dir)
    section.tables   # [Piece(title, how, definition, name, markdown)]: CSV + markdown written under tables_dir
    section.figures  # [Piece(title, how, definition, name, paths=[png, pdf])] under figures_dir (None: none)
    section.messages # why something is absent (no analysis files)

Several results folders: their analysis rows are stacked, with a `suite` column; one figure per
(suite, reference model, dataset).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from amod_bench.results import ANALYSIS_DIR, CORRELATIONS, DIAGNOSTICS, PRECISION_AT_K

from .markdown import ci_text
from .output import write_csv, write_markdown


@dataclass
class Piece:
    """One table or figure of the section, with the one line that says how to read it."""

    title: str
    how: str  # one line: how to read it
    definition: str  # what every number is
    name: str  # file name under tables/ or figures/, without extension
    markdown: str = ""  # tables: the markdown shown in index.md
    paths: list[Path] = field(default_factory=list)  # figures: [png, pdf]


@dataclass
class ImportanceSection:
    tables: list[Piece] = field(default_factory=list)
    figures: list[Piece] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def read_analysis(folders) -> dict[str, pd.DataFrame]:
    """{file name: rows of every folder that has it}, `suite` = the folder's name; absent files are left out."""
    frames = {}
    for name in (CORRELATIONS, PRECISION_AT_K, DIAGNOSTICS):
        parts = [pd.read_csv(path).assign(suite=Path(folder).name)
                 for folder in folders if (path := Path(folder) / ANALYSIS_DIR / name).is_file()]
        if parts:
            frames[name] = pd.concat(parts, ignore_index=True)
    return frames


def _ci(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "-"
    interval = ci_text(low, high)
    return f"{mean:.2f}" if interval == "-" else f"{mean:.2f} {interval}"


def _series(frame: pd.DataFrame) -> pd.Series:
    """Row label: "amod (parent)", "mod (fine-tuned)": the router and whose forward its scores come from."""
    return frame["router"] + " (" + frame["source"] + ")"


def _by_block(frame: pd.DataFrame, value: str, keys: list[str]) -> pd.DataFrame:
    """Wide markdown frame: one row per `keys`, one column "block b" per routed block, text "mean [CI]"."""
    text = frame.assign(_text=[_ci(m, lo, hi) for m, lo, hi in zip(
        frame[value], frame[f"{value}_ci_low"], frame[f"{value}_ci_high"])])
    wide = text.pivot_table(index=keys, columns="block", values="_text", aggfunc="first", sort=False)
    wide.columns = [f"block {b}" for b in wide.columns]
    return wide.reset_index()


def _where_keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in ("suite", "reference", "dataset") if k in frame and frame[k].nunique() > 1]


def correlation_markdown(corr: pd.DataFrame) -> pd.DataFrame:
    show = corr.assign(router=_series(corr), C=corr["capacity"].map(lambda c: "any" if np.isnan(c) else f"{c:g}"))
    return _by_block(show, "spearman", _where_keys(corr) + ["router", "C", "n_seeds"])


def precision_markdown(prec: pd.DataFrame) -> pd.DataFrame:
    show = prec.assign(router=_series(prec), C=prec["capacity"].map(lambda c: f"{c:g}"),
                       k=prec["k"].astype(str) + "/" + prec["tokens"].astype(str),
                       chance=prec["chance"].map(lambda c: f"{c:.2f}"))
    return _by_block(show, "precision", _where_keys(prec) + ["C", "k", "chance", "router", "n_seeds"])


def diagnostics_markdown(diag: pd.DataFrame) -> pd.DataFrame:
    show = diag[_where_keys(diag) + ["router", "capacity", "k", "block", "n_seeds", "n_images"]].copy()
    show["capacity"] = diag["capacity"].map(lambda c: f"{c:g}")
    show["CLS kept"] = diag["cls_kept"].map(lambda v: f"{v:.0%}")
    show["Jaccard vs previous routed block"] = diag["jaccard_previous"].map(
        lambda v: "-" if not np.isfinite(v) else f"{v:.2f}")
    return show


def importance_figure(corr: pd.DataFrame, prec: pd.DataFrame, level: float = 0.95):
    """Rows: Spearman correlation, precision@k; columns: capacity; x = routed block; one line per router
    and source (solid = fine-tuned cell, dashed = the reference model's own tokens), error bars = CI over images."""
    from .figures import plt, router_color

    capacities = sorted(prec["capacity"].unique())
    fig, axes = plt.subplots(2, len(capacities), figsize=(3.6 * len(capacities), 6.0), squeeze=False, sharex=True)
    blocks = sorted(prec["block"].unique())
    series = prec[["router", "source"]].drop_duplicates().sort_values(["source", "router"]).itertuples(index=False)
    series = list(series)
    for col, capacity in enumerate(capacities):
        rows = ((corr[corr["capacity"].isna() | (corr["capacity"] == capacity)], "spearman"),
                (prec[prec["capacity"] == capacity], "precision"))
        for row, (frame, value) in enumerate(rows):
            ax = axes[row][col]
            for i, (router, source) in enumerate(series):
                line = frame[(frame["router"] == router) & (frame["source"] == source)].sort_values("block")
                if line.empty:
                    continue
                x = line["block"].map(blocks.index) + 0.06 * (i - (len(series) - 1) / 2)  # dodge the error bars
                err = np.vstack([line[value] - line[f"{value}_ci_low"], line[f"{value}_ci_high"] - line[value]])
                own = source == "fine-tuned"
                ax.errorbar(x, line[value], yerr=np.nan_to_num(err), color=router_color(router.split(" ")[0]),
                            linestyle="-" if own else "--", marker="s" if own else "o", markersize=4, capsize=2,
                            label=f"{router} ({source})")
            if value == "spearman":
                ax.axhline(0.0, color="grey", linewidth=0.8)
                ax.set_title(f"C = {capacity:g}", fontsize=9)
            else:
                ax.axhline(frame["chance"].iloc[0], color="grey", linewidth=0.8, linestyle=":")
            ax.set_ylabel("Spearman ρ with importance" if value == "spearman" else "precision@k (dotted: chance k/N)",
                          fontsize=8)
            ax.set_xticks(range(len(blocks)), [f"block {b}" for b in blocks], fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.suptitle(f"Router scores vs leave-one-out token importance (mean over images, {level:.0%} t CI)", fontsize=9)
    fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(labels) // 4), 1, 0.96))
    return fig


def importance_section(folders, tables_dir: Path, figures_dir: Path | None = None) -> ImportanceSection:
    """Tables (always, when the analysis files exist) and the figure (when `figures_dir` is given)."""
    section = ImportanceSection()
    frames = read_analysis(folders)
    if not frames:
        section.messages.append("token importance: no analysis/ files; run `python bench.py analyze importance "
                                "RESULTS_DIR` on a run that kept checkpoints")
        return section
    corr, prec, diag = (frames.get(n, pd.DataFrame()) for n in (CORRELATIONS, PRECISION_AT_K, DIAGNOSTICS))
    definition = "/".join(sorted(set(corr.get("definition", pd.Series(dtype=str))))) or "skip"
    what = "alone skips" if definition == "skip" else "is removed at"
    importance = (f"importance of a token at a routed block = loss when it {what} that block minus the dense loss, "
                  f"for the dense reference model (definition '{definition}', analysis/analysis_inputs.json)")
    sources = ("router (parent) / (dense) = a parameter-free router's scores on the reference model's own tokens, "
               "the reference being the dense parent the routed cells start from (default) or the dense cell "
               "fine-tuned on their dataset (--reference dense); router (fine-tuned) = the fine-tuned cell's own "
               "scores, averaged over seeds per image")
    specs = [
        (corr, "importance_correlations", correlation_markdown, "Token importance vs router scores",
         "closer to 1 = the router ranks tokens as their importance does; 0 = unrelated; compare routers within "
         "a block",
         f"Spearman ρ of each router's scores with the {importance}; per image over its tokens, then mean "
         f"[95% t CI] over images (Pearson in the CSV); {sources}"),
        (prec, "importance_precision_at_k", precision_markdown, "Kept set vs most important tokens",
         "above chance = the router keeps tokens that matter; 1 = it keeps exactly the k most important",
         f"precision@k = share of a router's k kept tokens (k = floor(C N)) that are among the k most important "
         f"by the {importance}; mean [95% t CI] over images; chance = k/N; {sources}"),
        (diag, "routing_diagnostics", diagnostics_markdown, "Routing diagnostics",
         "how often each routed block lets CLS through, and how much consecutive routed blocks agree on the "
         "tokens they keep",
         "per routed block of each fine-tuned routed cell: CLS kept = share of images whose CLS token (index 0) "
         "the block keeps; Jaccard = |A ∩ B| / |A ∪ B| of the block's kept set and the previous routed block's, "
         "mean over images (1 = same tokens); means over seeds"),
    ]
    for frame, name, to_markdown, title, how, definition in specs:
        if frame.empty:
            continue
        write_csv(frame, tables_dir, name)
        section.tables.append(Piece(title, how, definition, name,
                                    write_markdown(to_markdown(frame), tables_dir, name)))
    if figures_dir is None or prec.empty or corr.empty:
        return section
    from .figures import close
    from .output import save_figure
    from .routing_maps import slug

    groups = prec.groupby(["suite", "reference", "dataset"], sort=True)
    for (suite, reference, dataset), group in groups:
        name = "importance" if groups.ngroups == 1 else "importance_" + slug(f"{suite}_{dataset}_{reference}")
        fig = importance_figure(corr[(corr["suite"] == suite) & (corr["reference"] == reference)
                                     & (corr["dataset"] == dataset)], group)
        paths = save_figure(fig, figures_dir, name)
        close(fig)
        where = "" if groups.ngroups == 1 else f" ({suite}: {dataset}, reference {reference})"
        section.figures.append(Piece(
            f"Token importance vs router scores{where}",
            "higher is better in both rows; a router whose points sit on the grey line does no better than chance",
            f"top: Spearman ρ of router scores with the {importance}; bottom: precision@k (dotted = chance k/N); "
            "columns = capacity; dashed = router on the reference model's tokens, solid = fine-tuned cell; "
            "error bars = 95% t CI over images", name, paths=paths))
    return section
