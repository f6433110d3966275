"""Command-line dispatcher behind `bench.py`.

Each subcommand lives in the module that owns its concern; that module provides
`add_arguments(parser)` and `main(args) -> int`. Only the chosen module is
imported, so `bench.py --help` and `bench.py report` start without torch or Ray.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("amod_bench.runner", "run every unfinished cell of a suite on Ray"),
    "plan": ("amod_bench.plan", "print a suite's grid of cells without running it"),
    "report": ("amod_bench.report.cli", "regenerate tables and figures from a results folder"),
    "shards": ("amod_bench.data.cli", "write datasets as WebDataset shards"),
    "perf": ("amod_bench.perf", "benchmark step time, memory and loader throughput"),
    "analyze": ("amod_bench.analysis.cli", "token importance vs router scores, routing diagnostics, from checkpoints"),
}


def _build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Convergence benchmarks for Mixture-of-Depths routing in ViTs. "
        "`bench.py SUITE.yaml` is short for `bench.py run SUITE.yaml`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if argv and argv[0] == name:
            importlib.import_module(module).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = ["run", *argv]
    args = _build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(args) or 0)


def run() -> None:
    """The program (`bench.py`, `amod-bench`): `main` on sys.argv, then exit with its status."""
    status = main()
    # Teardown would walk every object torch, pandas and matplotlib created before exiting
    # (a noticeable wait after a report: docs/DECISIONS.md); frozen, they are left to the OS with the process.
    gc.freeze()
    sys.exit(status)
