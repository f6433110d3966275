"""`bench.py run SUITE.yaml`: the suite's cells (`run_suite`), then its analyses and its report."""
from __future__ import annotations

import sys
from pathlib import Path

from .planning import RunError
from .suite_run import run_suite


def add_arguments(parser) -> None:
    parser.add_argument("suite", help="suite YAML file")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                             "(default: start a local instance bound to 127.0.0.1)")
    parser.add_argument("--filter", action="append", default=[], metavar="PATTERN",
                        help="run only cells whose id matches this glob (or contains it); repeatable")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="cap on cells running at once (default: the suite's, bounded by the cluster)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard earlier results and checkpoints of the selected cells")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed and diverged cells again (they are skipped by default)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would run and exit")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a suite field, e.g. --set defaults.recipe.epochs=2")
    parser.add_argument("--allow-large-grid", dest="set", action="append_const", const="max_cells=null",
                        help="run a grid of more than the suite's max_cells (default 10,000) cells")
    parser.add_argument("--no-report", action="store_true",
                        help="skip writing the report (results/<suite>/report/) at the end")


def main(args) -> int:
    from amod_bench.results import ResultWriteError
    from amod_bench.suite import SuiteError, load_suite

    try:
        statuses = run_suite(args.suite, address=args.address, cell_filter=args.filter,
                             max_concurrent=args.max_concurrent, fresh=args.fresh,
                             retry_failed=args.retry_failed, dry_run=args.dry_run,
                             num_cpus=args.num_cpus, overrides=args.set)
        if not (args.dry_run or args.no_report):
            from amod_bench.report.build import ReportOptions, build_report

            suite = load_suite(args.suite, overrides=args.set)
            _run_analyses(suite)
            report = build_report([suite.output], None, ReportOptions())
            print(f"report: {report.out}/index.md")
    except (SuiteError, RunError, ResultWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if all(s in ("done", "skipped") for s in statuses.values()) or args.dry_run else 1


def _run_analyses(suite) -> None:
    """The suite's `analyses`, on the checkpoints its cells left; a failed analysis is reported, the report still written."""
    if not suite.analyses:
        return
    from amod_bench.analysis.cli import AnalysisError, analyze_importance

    for name in suite.analyses:  # validated: "importance" is the only one
        print(f"analysis: {name} (bench.py analyze {name} {suite.output})")
        try:
            analyze_importance(Path(suite.output))
        except AnalysisError as error:
            print(f"analysis {name} not written: {error}", file=sys.stderr)

