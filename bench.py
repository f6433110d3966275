#!/usr/bin/env python
"""amod-bench entry point: `python bench.py --help` lists the subcommands."""
from amod_bench.cli import run

if __name__ == "__main__":
    run()
