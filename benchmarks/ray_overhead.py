"""Ray's per-cell overhead on the fast path (runner/ray_fast_path.py) against Ray's public API,
side by side in one sitting: the same small suite run alternately on each path, each run a
fresh `bench.py run` with a local Ray instance, and the medians over cells of each summary's
`startup_seconds` (trial start to first training step), `wall_seconds` and training seconds.

    python benchmarks/ray_overhead.py                # 2 rounds x 2 paths x 6 cells, ~8 min on 2 cores
    python benchmarks/ray_overhead.py --rounds 1 --cells 4

On a Ray version the fast path was not tested on, both runs take the public path and the
script says so. Prints one table and the ratios public / fast.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suite_text(folder: Path, cells: int) -> str:
    seeds = list(range(cells))
    return textwrap.dedent(f"""\
        name: overhead
        output: {folder / 'results'}
        max_concurrent: 2
        defaults:
          grid: {{model: vit_nano_patch7_28, dataset: "bundled:digits", router: amod, capacity: 0.5, seed: {seeds}}}
          recipe: {{optimizer: adamw, lr: 0.003, epochs: 1, batch_size: 64, warmup_epochs: 0,
                    eval_every: 1, augment: {{hflip: false}}}}
          resources: {{workers: 1, cpus_per_worker: 1}}
        stages:
          - name: main
        """)


def run_once(public: bool, cells: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suite = folder / "overhead.yaml"
        suite.write_text(suite_text(folder, cells))
        env = {**os.environ, "AMOD_BENCH_RAY_PUBLIC": "1" if public else "0"}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "bench.py", "run", str(suite), "--no-report"], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"bench.py run failed ({'public' if public else 'fast'} path):\n{done.stdout}\n{done.stderr}")
        summaries = [json.loads(p.read_text()) for p in (folder / "results" / "cells").glob("*/summary.json")]
        said_public = "cells run on Ray's public API" in done.stderr
    return {"suite_seconds": elapsed, "public_path_taken": said_public,
            **{key: statistics.median(s[key] for s in summaries)
               for key in ("startup_seconds", "wall_seconds", "train_seconds", "eval_seconds")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs per path, alternating (default 2)")
    parser.add_argument("--cells", type=int, default=6, help="cells per run (default 6)")
    args = parser.parse_args()

    import ray

    from amod_bench.runner import ray_fast_path

    print(f"Ray {ray.__version__}; fast path tested on {', '.join(ray_fast_path.TESTED_RAY_VERSIONS)}; "
          f"{args.rounds} rounds x {args.cells} cells, 2 at a time")
    runs: dict[str, list[dict]] = {"fast": [], "public": []}
    for round_index in range(args.rounds):
        for path in (("fast", "public") if round_index % 2 == 0 else ("public", "fast")):
            runs[path].append(run_once(path == "public", args.cells))
    if runs["fast"][0]["public_path_taken"]:
        print("this Ray version takes the public path either way: the two columns measure the same path")
    keys = ("startup_seconds", "wall_seconds", "train_seconds", "eval_seconds", "suite_seconds")
    print(f"{'median over cells, then runs':32} {'fast':>8} {'public':>8} {'public/fast':>12}")
    for key in keys:
        fast = statistics.median(r[key] for r in runs["fast"])
        public = statistics.median(r[key] for r in runs["public"])
        print(f"{key:32} {fast:8.2f} {public:8.2f} {public / fast:12.2f}")


if __name__ == "__main__":
    main()
