#!/usr/bin/env python
"""amod-bench entry point: `python bench.py --help` lists the subcommands."""
import sys

from amod_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
