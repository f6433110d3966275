"""`bench.py perf`: the command line (options, presets, validation) and its main.

    python bench.py perf --quick                                  # tiny preset, < 1 min on 2 CPU cores (CI)
    python bench.py perf --threads 1 --batch-size 8               # DeiT-S at 224 px on this CPU
    python bench.py perf --device cuda --dtype bfloat16 --batch-size 128 --mem-img-sizes 384,512   # a GPU

Output: a table on stdout, `<out>/<name>.json` (`{"meta": {hardware, versions,
arguments}, "rows": [flat dicts]}`) and `<out>/<name>.png` (time ratio against
FLOP ratio, with the ideal y = x). The prepared GPU run is `amod_bench.perf.gpu_run`.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

from .variants import declared_routers

# --quick: the tiny preset and few iterations (CI); explicit options still win
QUICK = dict(model="vit_nano_patch7_28", batch_size=8, warmup=1, iters=3, mem_img_sizes="56",
             loader_images=24, loader_batch_size=8, threads=1)
DEFAULTS = dict(model="deit_small_patch16_224", batch_size=8, warmup=2, iters=7, mem_img_sizes="",
                loader_images=192, loader_batch_size=32, threads=None)


def csv(kind: Callable):
    """argparse type: a comma-separated list of `kind`."""
    def parse(text: str):
        return [kind(part) for part in text.split(",") if part.strip()]
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"registered model (default {DEFAULTS['model']})")
    routers = declared_routers()
    parser.add_argument("--routers", type=csv(str), default=list(routers),
                        help=f"comma-separated routers (default {','.join(routers)})")
    parser.add_argument("--capacities", type=csv(float), default=[0.125, 0.5],
                        help="comma-separated capacities C (default 0.125,0.5)")
    parser.add_argument("--score-impls", type=csv(str), default=None,
                        help="amod/cls score paths to time, e.g. explicit,chunked (default: the model's default)")
    parser.add_argument("--batch-size", type=int, help=f"images per step (default {DEFAULTS['batch_size']})")
    parser.add_argument("--img-size", type=int, help="input size in pixels (default: the model's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="autocast dtype; parameters stay float32 (default: bfloat16 on GPU, float32 on CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice; --quick: 1). "
                        "On a shared machine use 1: with more, every op waits for its slowest thread")
    parser.add_argument("--warmup", type=int, help=f"untimed steps per configuration (default {DEFAULTS['warmup']})")
    parser.add_argument("--iters", type=int, help=f"timed rounds; each times every configuration once "
                        f"(default {DEFAULTS['iters']})")
    parser.add_argument("--modes", type=csv(str), default=["infer", "train"], help="infer,train (default both)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--mem-img-sizes", help="comma-separated extra input sizes for peak memory only, "
                        "e.g. 384,512 (default none; --quick: 56)")
    parser.add_argument("--mem-routers", type=csv(str), default=["dense", "mod", "amod"],
                        help="routers measured at --mem-img-sizes (default dense,mod,amod)")
    parser.add_argument("--mem-batch-size", type=int, help="batch for --mem-img-sizes (default --batch-size)")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader throughput measurement")
    parser.add_argument("--loader-images", type=int, help=f"JPEGs written and read (default "
                        f"{DEFAULTS['loader_images']})")
    parser.add_argument("--loader-workers", type=int, default=1, help="loader worker processes (default 1)")
    parser.add_argument("--loader-batch-size", type=int, help=f"loader batch (default {DEFAULTS['loader_batch_size']})")
    parser.add_argument("--loader-img-size", type=int, help="loader output size (default: the model's input size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the synthetic batch")
    parser.add_argument("--out", default=os.path.join("results", "perf"), help="output folder (default results/perf)")
    parser.add_argument("--name", help="output file stem (default perf_<model>_<device>)")
    parser.add_argument("--no-figure", action="store_true", help="do not draw the figure")
    parser.add_argument("--quick", action="store_true", help="tiny preset, few iterations: well under a minute")
    parser.add_argument("--optimizer-step", action="store_true",
                        help="add an AdamW step to each training step (default: forward + backward only)")


def check_names(model: str, routers, capacities, score_impls) -> None:
    """SystemExit with the valid names for an unknown model, router or score impl, or a bad capacity."""
    from amod_bench.models import list_models
    from amod_bench.routers import list_routers
    from amod_bench.routers.layout import SCORE_IMPLS, check_capacity

    if model not in list_models():
        raise SystemExit(f"unknown model {model!r}; valid: {list_models()}")
    for router in routers:
        if router not in list_routers():
            raise SystemExit(f"unknown router {router!r}; valid: {list_routers()}")
    for c in capacities:
        try:
            check_capacity(c)
        except ValueError as exn:
            raise SystemExit(str(exn)) from None
    for impl in score_impls or []:
        if impl not in SCORE_IMPLS:
            raise SystemExit(f"unknown score impl {impl!r}; valid: {list(SCORE_IMPLS)}")


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the --quick or normal defaults; validate names."""
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.mem_img_sizes = csv(int)(args.mem_img_sizes) if isinstance(args.mem_img_sizes, str) else args.mem_img_sizes
    check_names(args.model, list(args.routers) + list(args.mem_routers), args.capacities, args.score_impls)
    for mode in args.modes:
        if mode not in ("infer", "train"):
            raise SystemExit(f"unknown mode {mode!r}; valid: infer, train")
    return args


def main(args: argparse.Namespace) -> int:
    from amod_bench.results import write_json_atomic

    from .benchmark import run_benchmark
    from .output import finite_json, format_tables, write_figure

    args = resolve(args)
    log = lambda text: print(text, flush=True)  # noqa: E731
    result = run_benchmark(args, log)
    print()
    print(format_tables(result))
    device = result["meta"]["environment"]["device"].split(":")[0]
    name = args.name or f"perf_{args.model}_{device}"
    json_path = os.path.join(args.out, f"{name}.json")
    write_json_atomic(json_path, finite_json(result))
    print(f"\nwrote {json_path}")
    if not args.no_figure:
        png = os.path.join(args.out, f"{name}.png")
        if write_figure(result, png):
            print(f"wrote {png}")
    failed = [r for r in result["rows"] if r.get("error")]
    if failed:
        print(f"{len(failed)} configuration(s) failed (error rows in the JSON)")
    return 0
