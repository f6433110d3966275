"""`bench.py analyze importance RESULTS_DIR [--images N]`: token importance and routing diagnostics.

For every group of finished routed cells that start from the same dense parent
(`init_from`) on the same dataset, with a dense reference model: `--reference parent`
(default, the paper's "vanilla model") is that parent; `--reference dense` is the
lowest-seed finished full-depth dense cell of the group's stage, model and dataset
that starts from the same parent (the dense model fine-tuned on the routed cells'
task: use it when the parent was trained on other data and its loss there means little).

1. the reference checkpoint is rebuilt dense and run on the first N validation images
   of the routed cells' dataset (the split and order the cells evaluate on); at every
   block position any routed cell routes, each token's leave-one-out importance is
   measured (`analysis.importance`, definition "skip" or "remove");
2. the parameter-free routers score the reference model's own tokens: A-MoD (`amod`,
   attention received in the previous block), `cls` (the previous block's CLS row,
   EViT) and `random` (seeded), each through the project's router code on the
   reference weights at C = 1 (every token kept, so the model is the dense reference
   and the scores are those of its dense forward) - source "parent" or "dense";
3. every routed cell's own model (its checkpoint) runs on the same images; its routers'
   scores and kept sets are what it computes in its own forward - source "fine-tuned".
   Several seeds of one variant: each statistic is averaged over seeds per image.

Per routed block: Spearman / Pearson correlation with the importance (per image,
then mean and 95% Student-t CI over images) and precision@k at each capacity of the
suite; routing diagnostics of the fine-tuned cells (CLS kept, Jaccard overlap with
the previous routed block). Written to RESULTS_DIR/analysis/ (names in
`amod_bench.analysis`), atomically; `bench.py report` shows them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from amod_bench.routers.traits import router_traits, routers_in_display_order

from amod_bench.results import ANALYSIS_DIR, ANALYSIS_INPUTS, CORRELATIONS, DIAGNOSTICS, PRECISION_AT_K

from . import DEFINITIONS, REFERENCES

LEVEL = 0.95


def parent_routers() -> list[str]:
    """The routers with no parameters of their own (amod, cls, random): they score the parent's own
    tokens as they are. Sorted by name, the order of the analysis tables' rows."""
    return sorted(t.name for t in routers_in_display_order() if t.routes and not t.learns)


class AnalysisError(RuntimeError):
    """The results folder cannot be analysed (no routed cells, a checkpoint missing, ...)."""


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    imp = sub.add_parser("importance", help="token importance vs router scores (paper Fig. 7), routing diagnostics",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("results", help="results folder of a suite run that kept checkpoints")
    imp.add_argument("--images", type=int, default=64, metavar="N",
                     help="first N validation images of the routed cells' dataset (default 64)")
    imp.add_argument("--definition", choices=DEFINITIONS, default="skip",
                     help="skip (default): the token alone skips the block, everything else dense, as a router "
                          "decides; remove: the token is deleted from the sequence at that block (paper wording)")
    imp.add_argument("--reference", choices=REFERENCES, default="parent",
                     help="the dense model whose token importance is measured: parent (default: the checkpoint "
                          "the routed cells start from) or dense (the dense cell fine-tuned on their dataset)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the random router's scores (default 0)")


def main(args) -> int:
    from amod_bench.report.load import ResultsNotFound

    if args.images < 1:
        print(f"error: --images must be >= 1, got {args.images}", file=sys.stderr)
        return 2
    try:
        paths = analyze_importance(Path(args.results), n_images=args.images, definition=args.definition,
                                   reference=args.reference, seed=args.seed)
    except (AnalysisError, ResultsNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _summary(values: np.ndarray) -> dict:
    """Mean over images (NaN ignored), its Student-t CI, and how many images counted."""
    from amod_bench.report.accuracy import t_interval

    finite = values[np.isfinite(values)]
    low, high = t_interval(finite, LEVEL)
    return {"mean": float(finite.mean()) if finite.size else np.nan, "ci_low": low, "ci_high": high,
            "n_images": int(finite.size)}


def _seed_mean(per_seed: list[np.ndarray]) -> np.ndarray:
    """(n,) per image: the mean over seeds, NaN where every seed is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN images stay NaN
        return np.nanmean(np.vstack(per_seed), axis=0)


def _seeds(seeds: list[int]) -> dict:
    return {"seeds": " ".join(map(str, seeds)), "n_seeds": len(seeds)}


def _correlation_row(base: dict, seeds: list[int], per_seed: list[dict]) -> dict:
    """One correlations row: Spearman and Pearson, each a mean over images of the per-image seed mean."""
    row = {**base, **_seeds(seeds)}
    for stat in ("spearman", "pearson"):
        s = _summary(_seed_mean([p[stat] for p in per_seed]))
        row.update({stat: s["mean"], f"{stat}_ci_low": s["ci_low"], f"{stat}_ci_high": s["ci_high"],
                    f"{stat}_n_images": s["n_images"]})
    return row


def _precision_row(base: dict, seeds: list[int], k: int, num_tokens: int, per_seed: list[dict]) -> dict:
    s = _summary(_seed_mean([p["precision"] for p in per_seed]))
    return {**base, **_seeds(seeds), "k": k, "tokens": num_tokens, "chance": k / num_tokens,
            "precision": s["mean"], "precision_ci_low": s["ci_low"], "precision_ci_high": s["ci_high"],
            "n_images": s["n_images"]}


def _checkpoints(rows: pd.DataFrame) -> dict[str, Path]:
    """{cell: model.safetensors} for every row; AnalysisError naming each cell whose checkpoint is missing."""
    from amod_bench.report.routing_maps import checkpoint_file

    found, missing = {}, []
    for _, row in rows.iterrows():
        path = checkpoint_file(row)
        if path is None:
            folder = row.get("checkpoint")
            missing.append(f"{row['cell']}: " + (f"{Path(folder) / 'model.safetensors'} does not exist"
                                                  if isinstance(folder, str) and folder else
                                                  "summary.json checkpoint is null (none kept)"))
        found[row["cell"]] = path
    if missing:
        raise AnalysisError("checkpoints missing (rerun the suite with checkpoints kept):\n  " + "\n  ".join(missing))
    return found


def _config(row: pd.Series) -> dict:
    return json.loads((Path(row["path"]) / "config.json").read_text())


def _routed_cells(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every cell, the finished routed cells that start from another cell's checkpoint)."""
    from amod_bench.report.groups import add_variant_columns
    from amod_bench.report.load import load_results

    results = load_results([folder])
    cells, _, _ = add_variant_columns(results.cells)
    ok = cells[cells["ok"]]
    routes = ok["router"].map(lambda r: router_traits(r).routes)
    routed = ok[routes & ok["init_from"].notna()] if "init_from" in ok else ok.iloc[0:0]
    if routed.empty:
        raise AnalysisError(f"{folder}: no finished routed cell that starts from another cell's checkpoint "
                            "(config.json init_from); nothing to analyse")
    return cells, routed.sort_values(["variant", "seed", "cell"], kind="stable")


def analyze_importance(folder: Path, *, n_images: int = 64, definition: str = "skip", reference: str = "parent",
                       seed: int = 0, log=print) -> dict[str, Path]:
    """Run the analysis on a results folder; returns {file name: path written}."""
    import torch

    from amod_bench.report.output import write_csv
    from amod_bench.results import write_json_atomic

    folder = Path(folder)
    started = time.perf_counter()
    cells, routed = _routed_cells(folder)
    frames = {CORRELATIONS: [], PRECISION_AT_K: [], DIAGNOSTICS: []}  # file name -> rows
    inputs = {"definition": definition, "reference": reference, "n_images_requested": n_images,
              "random_seed": seed, "level": LEVEL, "torch_threads": torch.get_num_threads(), "groups": []}
    for _, group in routed.groupby(["init_from", "dataset"], sort=True):
        tables, record = _analyze_group(_reference_cell(cells, group, reference, folder), group, n_images=n_images,
                                        definition=definition, source=reference, seed=seed, log=log)
        for name, rows in tables.items():
            frames[name] += rows
        inputs["groups"].append(record)
    inputs["seconds"] = round(time.perf_counter() - started, 2)
    out = folder / ANALYSIS_DIR
    written = {name: write_csv(pd.DataFrame(rows), out, name.removesuffix(".csv")) for name, rows in frames.items()}
    write_json_atomic(out / ANALYSIS_INPUTS, inputs)
    written[ANALYSIS_INPUTS] = out / ANALYSIS_INPUTS
    log(f"importance analysis: {len(routed)} routed cells, {inputs['seconds']:.1f} s")
    return written


def _reference_cell(cells: pd.DataFrame, group: pd.DataFrame, kind: str, folder: Path) -> pd.Series:
    """The dense model whose token importance is measured for the routed cells `group` (module docstring)."""
    from amod_bench.report.routing_maps import checkpoint_file

    row0 = group.iloc[0]
    if kind == "parent":
        parent = cells[cells["cell"] == row0["init_from"]]
        if parent.empty:
            raise AnalysisError(f"{folder}: cells {sorted(group['cell'])} start from {row0['init_from']!r}, "
                                "which is not in this results folder")
        return parent.iloc[0]
    same = cells["ok"] & (cells["router"] == "dense") & (cells["init_from"] == row0["init_from"])
    for key in ("stage", "model", "dataset"):
        same &= cells[key] == row0[key]
    dense = [row for _, row in cells[same].sort_values(["seed", "cell"], kind="stable").iterrows()
             if checkpoint_file(row) is not None]
    if not dense:
        raise AnalysisError(f"{folder}: --reference dense: no finished dense cell of {row0['stage']} / "
                            f"{row0['model']} / {row0['dataset']} starting from {row0['init_from']} kept a checkpoint")
    return dense[0]


def _analyze_group(ref: pd.Series, group: pd.DataFrame, *, n_images: int, definition: str, source: str, seed: int,
                   log):
    """Tables (lists of rows) and the inputs record for the routed cells of one parent and dataset;
    `ref` is the reference cell, `source` names it in the rows ("parent" or "dense")."""
    from amod_bench.report.routing_maps import build_from_checkpoint, validation_batch
    from amod_bench.routers.layout import resolve_routed_layers

    from . import importance as imp

    weights = _checkpoints(pd.concat([ref.to_frame().T, group]))
    ref_config = _config(ref)
    configs = {row["cell"]: _config(row) for _, row in group.iterrows()}
    first = configs[group["cell"].iloc[0]]
    if ref_config.get("num_classes") != first.get("num_classes"):
        raise AnalysisError(f"reference {ref['cell']} has {ref_config.get('num_classes')} classes but "
                            f"{group['dataset'].iloc[0]} has {first.get('num_classes')}: its loss on these images "
                            "is undefined")
    reference = build_from_checkpoint({**ref_config, "router": "dense"}, weights[ref["cell"]]).eval()
    images, labels, _mean, _std = validation_batch(first, reference, n_images)
    if len(images) < n_images:
        log(f"importance: the validation split holds {len(images)} images, fewer than --images {n_images}")
    blocks = sorted({b for c in configs.values() for b in resolve_routed_layers(len(reference.blocks),
                                                                                 c["routed_layers"])})
    dense = imp.trace(reference, images, inputs_of=blocks)
    importance = {b: imp.leave_one_out_importance(reference, dense.block_inputs[b], labels, b, definition)
                  for b in blocks}
    num_tokens = dense.block_inputs[blocks[0]].shape[1]
    where = {"reference": ref["cell"], "dataset": group["dataset"].iloc[0], "definition": definition}
    tables = {CORRELATIONS: [], PRECISION_AT_K: [], DIAGNOSTICS: []}

    # parameter-free routers on the reference weights at C = 1: the dense forward, and the scores its routers compute
    scored = [b for b in blocks if b > 0 and b - 1 not in blocks]  # attention routers read block b-1 over all N
    capacities = sorted({(float(c["capacity"]), c.get("cls_policy") == "keep") for c in configs.values()})
    for router in parent_routers():
        model = build_from_checkpoint({**ref_config, "router": router, "capacity": 1.0, "cls_policy": "compete",
                                       "routed_layers": blocks if router == "random" else scored,
                                       "router_options": {"seed": seed} if router == "random" else {}},
                                      weights[ref["cell"]]).eval()
        _add_rows(tables, [imp.trace(model, images)], importance, {**where, "router": router, "source": source},
                  [int(ref["seed"])], capacities, num_tokens)

    for _variant, cells in group.groupby("variant", sort=False):
        row0 = cells.iloc[0]
        label = row0["router_label"] + (f" [{row0['recipe']}]" if row0["recipe"] else "")
        traces = [imp.trace(build_from_checkpoint(configs[c], weights[c]).eval(), images) for c in cells["cell"]]
        capacity = (float(row0["capacity"]), configs[row0["cell"]].get("cls_policy") == "keep")
        _add_rows(tables, traces, importance, {**where, "router": label, "source": "fine-tuned"},
                  [int(s) for s in cells["seed"]], [capacity], num_tokens)

    record = {**where, "parent": group["init_from"].iloc[0], "reference_checkpoint": str(weights[ref["cell"]]),
              "blocks": blocks,
              "attention_scored_blocks": scored, "n_images": len(images), "tokens": num_tokens,
              "images": f"the first {len(images)} images of the 'val' split of "
                        f"{first.get('dataset_path') or first['dataset']} in loader order (unshuffled, as the "
                        "cells evaluate)",
              "labels": labels.tolist(),
              "cells": [{"cell": c, "router": configs[c]["router"], "capacity": configs[c]["capacity"],
                         "seed": configs[c]["seed"], "checkpoint": str(weights[c])} for c in group["cell"]]}
    return tables, record


def _add_rows(tables: dict, traces: list, importance: dict, base: dict, seeds: list[int], capacities,
              num_tokens: int) -> None:
    """Rows of every table for one router: `traces` holds one Trace per seed (the reference model: one).

    Correlations once per block; precision@k per (capacity, keep CLS) in `capacities`; the routing
    diagnostics only for fine-tuned cells, whose kept sets are their own routing (the reference at C = 1
    keeps every token).
    """
    from amod_bench.routers.layout import kept_tokens

    from . import importance as imp

    fine_tuned = base["source"] == "fine-tuned"
    for b in sorted(traces[0].scores):
        row = {**base, "block": b, "capacity": capacities[0][0] if fine_tuned else np.nan}
        tables[CORRELATIONS].append(_correlation_row(row, seeds, [imp.token_statistics(t.scores[b], importance[b])
                                                                  for t in traces]))
        for capacity, keep_cls in capacities:
            k = kept_tokens(num_tokens, capacity)
            per_seed = [imp.token_statistics(t.scores[b], importance[b], k, keep_cls) for t in traces]
            tables[PRECISION_AT_K].append(_precision_row({**row, "capacity": capacity}, seeds, k, num_tokens, per_seed))
    if fine_tuned:
        routing = [imp.routing_statistics(t.kept, num_tokens) for t in traces]
        capacity = capacities[0][0]
        for b in sorted(routing[0]):
            row = {**{key: v for key, v in base.items() if key != "source"}, "block": b, "capacity": capacity,
                   "k": kept_tokens(num_tokens, capacity), **_seeds(seeds)}
            for stat in ("cls_kept", "jaccard_previous"):
                row[stat] = _summary(_seed_mean([r[b][stat] for r in routing]))["mean"]
            tables[DIAGNOSTICS].append({**row, "n_images": len(routing[0][b]["cls_kept"])})
