"""`bench.py report`: regenerate tables and figures from one or more results folders.

    python bench.py report results/toy                      # -> results/toy/report/
    python bench.py report results/a results/b --out reports/ab
    python bench.py report results/toy --peak-mode relative --within 2 --target-top1 75 --no-figures
    python bench.py report results/toy --common-target dense   # the dense median best as the common target

Reads plain files only; never imports Ray (torch only for the routing maps).
"""
from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="+", metavar="RESULTS", help="results/<suite> folder(s) to combine")
    parser.add_argument("--out", default=None, help="report folder (default RESULTS/report; required with several)")
    parser.add_argument("--within", type=float, default=None, metavar="X",
                        help="peak rule: X below the cell's own peak (default: the suite's "
                             "targets.within_peak_pct, else 2)")
    parser.add_argument("--peak-mode", choices=("points", "relative"), default="points",
                        help="peak rule: 'points' = peak - X percentage points (default), "
                             "'relative' = peak * (1 - X/100)")
    parser.add_argument("--target-top1", type=float, default=None, metavar="PCT",
                        help="common rule: one val top-1 target for every workload (default: the suite's "
                             "targets.top1, else --common-target)")
    parser.add_argument("--common-target", choices=("lowest", "every_run", "dense"), default=None,
                        help="common rule without an explicit target (default: the suite's targets.common_rule, "
                             "else 'lowest'): 'lowest' = per capacity, the lowest median best among the compared "
                             "arms, which every arm reaches on most seeds; 'every_run' = the lowest best of any "
                             "run compared, which every run reaches (bounded speedup CIs); 'dense' = the "
                             "full-depth dense model's median best")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="tables and index.md only")
    parser.add_argument("--no-routing-maps", action="store_true", help="skip the routing maps (no torch)")
    parser.add_argument("--images", type=int, default=4, help="validation images per routing map (default 4)")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from amod_bench.results import ResultWriteError

    from .build import ReportOptions, build_report
    from .load import ResultsNotFound

    folders = [Path(f) for f in args.folders]
    for folder in folders:
        if not folder.is_dir():
            print(f"error: results folder not found: {folder}", file=sys.stderr)
            return 2
    if len(folders) > 1 and args.out is None:
        print("error: several results folders: give --out DIR for the combined report", file=sys.stderr)
        return 2
    options = ReportOptions(within=args.within, peak_mode=args.peak_mode, target_top1=args.target_top1,
                            common_rule=args.common_target,
                            n_boot=args.bootstrap, seed=args.seed, figures=not args.no_figures,
                            routing_maps=not args.no_routing_maps, n_images=args.images)
    start = time.perf_counter()
    try:
        report = build_report(folders, args.out, options)
    except (ResultsNotFound, ResultWriteError) as exc:  # a write error names the file; written ones stay whole
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cells = report.results.cells
    print(f"report: {report.out}/index.md  ({len(cells)} cells, {int((~cells['ok']).sum())} flagged, "
          f"{len(report.tables)} tables, {len(report.figures)} figures, {time.perf_counter() - start:.1f} s)")
    return 0
