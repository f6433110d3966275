"""`bench.py perf`'s measurement: every routing variant of one model, timed interleaved, with memory.

Per configuration (dense, isoflop, mod, amod, mod_tanh, random, cls at each capacity):
- `infer_*`: forward under `torch.no_grad()` in eval mode; `train_*`: zero_grad +
  forward + cross-entropy + backward in train mode, plus an AdamW step with
  `--optimizer-step` (off by default: its cost is per parameter, not per token,
  and would blur the routing comparison).
- `*_step_time` (ms, median), `*_samples_per_sec`, `*_time_ratio` (to dense),
  `flop_ratio` (forward MACs / dense MACs, `amod_bench.flops`), `*_efficiency`
  = flop_ratio / time_ratio (1.0: every FLOP saved is a second saved),
  `*_over_mod` (this router's time / MoD's at the same capacity).
- `train_step_mem_mb`: peak tensor memory of one training step above what was
  allocated before it (activations, gradients, temporaries; parameters and the
  input batch excluded); `measure.step_peak_mb` says how on CUDA and on CPU.
- `--mem-img-sizes`: the same memory figure at other resolutions (rows with
  kind "memory"), e.g. A-MoD against MoD at 384 and 512 px.
- Loader (kind "loader"): `amod_bench.perf.loader`.

An error in one configuration (out of memory or any other) becomes a row with
`error` set; the others still run.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Callable

from .environment import environment
from .loader import loader_rows
from .measure import error_text, free, make_optimizer, make_step, median, median_ratio, ms, step_peak_mb, \
    time_interleaved, timing_fields
from .variants import DENSE, Variant, build, has_mod_partner, inputs, macs, mod_partner, row_base, variants

METHODOLOGY = ("warm-up, then interleaved synchronised steps (one per configuration per round, rotating order); "
               "medians over rounds; ratios are medians of per-round ratios")


def resolve_device(name: str):
    """torch.device for --device ("auto": cuda if available) and the autocast dtype name for --dtype."""
    import torch
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def resolve_dtype(name: str, device) -> str:
    return name if name != "auto" else ("bfloat16" if device.type == "cuda" else "float32")


def mem_measure(device) -> str:
    return ("cuda max_memory_allocated - memory_allocated before the step" if device.type == "cuda"
            else "torch.profiler CPU allocator events (exact tensor bytes) above the pre-step level")


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Run every measurement; returns {"meta": ..., "rows": [...]}."""
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, log)
    finally:
        torch.set_num_threads(threads)  # in-process callers (tests) keep their setting


def _run(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    import torch
    from amod_bench.models import model_config

    device = resolve_device(args.device)
    dtype_name = resolve_dtype(args.dtype, device)
    dtype = getattr(torch, dtype_name)
    cfg = model_config(args.model)
    img_size = args.img_size or cfg["img_size"]
    num_classes = cfg["num_classes"]
    batch = args.batch_size
    meta = {"command": "python bench.py perf " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["perf"] else []),
            "arguments": {k: v for k, v in vars(args).items() if k != "func"}, "environment": environment(device),
            "methodology": METHODOLOGY, "mem_measure": mem_measure(device)}
    log(f"perf: {args.model} @ {img_size}px, batch {batch}, {device} {dtype_name}, "
        f"{torch.get_num_threads()} threads, warmup {args.warmup}, {args.iters} rounds")
    load = meta["environment"]["loadavg"]
    if device.type == "cpu" and torch.get_num_threads() > 1 and load and load[0] > (os.cpu_count() or 1) - 0.5:
        log(f"warning: load average {load[0]:.1f} on {os.cpu_count()} CPUs: with {torch.get_num_threads()} "
            "threads each op waits for a descheduled thread; --threads 1 gives steadier ratios")

    rows, models, errors = {}, {}, {}
    x, y = inputs(img_size, batch, num_classes, device, args.seed)
    for v in variants(args.routers, args.capacities, args.score_impls):
        row = row_base(args.model, v, img_size, batch, device, dtype_name, "step")
        row["gmacs"], row["flop_ratio"] = macs(args.model, v, img_size, num_classes)
        rows[v] = row
        try:
            models[v] = build(args.model, v, img_size, device, args.seed)
            row["param_count"] = round(sum(p.numel() for p in models[v].parameters()) / 1e6, 3)
            row["depth"] = len(models[v].blocks)
        except Exception as exn:
            errors[v] = error_text(exn)
            free(device)

    timings, cpu_timings = {}, {}
    for mode in args.modes:
        steps = {}
        for v, model in models.items():
            if v in errors:
                continue
            model.train(mode == "train")
            optimizer = make_optimizer(model, device) if mode == "train" and args.optimizer_step else None
            steps[v] = make_step(model, mode, x, y, device, dtype, optimizer)
        log(f"timing {mode}: {len(steps)} configurations")
        cpu_timings[mode] = {}
        timings[mode] = time_interleaved(steps, warmup=args.warmup, iters=args.iters, device=device,
                                         errors=errors, progress=lambda s: log(f"  {mode} {s}"),
                                         cpu_times=cpu_timings[mode])

    if not args.no_memory and "train" in args.modes:
        log("peak memory of one training step per configuration")
        for v, model in models.items():
            if v in errors:
                continue
            try:
                model.train()
                rows[v]["train_step_mem_mb"] = step_peak_mb(make_step(model, "train", x, y, device, dtype), device)
            except Exception as exn:
                errors[v] = error_text(exn)
            model.zero_grad(set_to_none=True)
            free(device)

    for v, row in rows.items():
        row["error"] = errors.get(v)
        partner = mod_partner(v) if has_mod_partner(v) and mod_partner(v) in rows else None
        for mode in args.modes:
            t = timings.get(mode, {}).get(v, [])
            row.update(timing_fields(mode, t, timings[mode].get(DENSE, []),
                                     None if partner is None else timings[mode].get(partner, []),
                                     batch=batch, flop_ratio=row["flop_ratio"]))
            if device.type == "cpu":  # CPU seconds: what waiting for a core on a shared machine does not inflate
                c = cpu_timings.get(mode, {}).get(v, [])
                row[f"{mode}_cpu_time"] = None if median(c) is None else median(c) * 1e3
                row[f"{mode}_cpu_times_ms"] = ms(c)
                row[f"{mode}_cpu_time_ratio"] = median_ratio(c, cpu_timings[mode].get(DENSE, []))
                row[f"{mode}_cpu_over_mod"] = (None if partner is None
                                               else median_ratio(c, cpu_timings[mode].get(partner, [])))
    add_mem_over_mod(rows)
    models.clear()
    free(device)
    out_rows = list(rows.values())

    if not args.no_memory and args.mem_img_sizes:
        for size in args.mem_img_sizes:
            out_rows += memory_rows(args.model, args.mem_routers, args.capacities, args.score_impls, size,
                                    args.mem_batch_size or args.batch_size, device, dtype_name, args.seed, log)

    if not args.no_loader:
        out_rows += loader_rows(args, cfg, img_size, out_rows, log)
    return {"meta": meta, "rows": out_rows}


def add_mem_over_mod(rows: dict) -> None:
    """`mem_over_mod`: a row's training-step memory over its MoD partner's (rows: {Variant: row})."""
    for v, row in rows.items():
        mod_mem = rows.get(mod_partner(v), {}).get("train_step_mem_mb")
        row["mem_over_mod"] = (row["train_step_mem_mb"] / mod_mem
                               if mod_mem and row.get("train_step_mem_mb") and has_mod_partner(v) else None)


def memory_rows(model_name: str, routers, capacities, score_impls, img_size: int, batch: int, device,
                dtype_name: str, seed: int, log) -> list[dict]:
    """Peak training-step memory (kind "memory") of each of `routers` at `img_size`."""
    import torch
    from amod_bench.models import model_config

    num_classes = model_config(model_name)["num_classes"]
    dtype = getattr(torch, dtype_name)
    log(f"peak memory at {img_size}px, batch {batch}")
    x, y = inputs(img_size, batch, num_classes, device, seed)
    by_variant: dict[Variant, dict] = {}
    for v in variants(routers, capacities, score_impls):
        if v == DENSE and "dense" not in routers:
            continue
        row = row_base(model_name, v, img_size, batch, device, dtype_name, "memory")
        row["gmacs"], row["flop_ratio"] = macs(model_name, v, img_size, num_classes)
        try:
            model = build(model_name, v, img_size, device, seed).train()
            row["train_step_mem_mb"] = step_peak_mb(make_step(model, "train", x, y, device, dtype), device)
            del model
        except Exception as exn:
            row["error"] = error_text(exn)
        free(device)
        by_variant[v] = row
    add_mem_over_mod(by_variant)
    return list(by_variant.values())
