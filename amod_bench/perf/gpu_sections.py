"""The sections of the prepared GPU run (`gpu_run`), each within its own time budget.

Every section returns flat rows. A configuration a section had no time left for
is a row with `skipped` set to the reason (never dropped silently); one that
failed (out of memory, a compile error) is a row with `error` set.

- `numerics`: bf16 against fp32 and chunked against explicit (`numerics`).
- `train_steps`: forward + backward + AdamW step under bf16 autocast at the
  paper's batch 128, all variants of a model interleaved; eager, or
  `torch.compile`d per block (regional compilation: the blocks of a model share
  compiled code, so a ViT compiles a few block graphs rather than 12 copies),
  with compile seconds and the graph breaks dynamo counted.
- `inference`: images/s at the paper's batch 100, and at the largest batch
  that fits (doubling until out of memory or the cap, timm benchmark.py style).
- `memory_rows` (from `benchmark`): training-step memory at 384/512 px.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import numerics
from .measure import error_text, free, make_optimizer, make_step, step_peak_mb, sync, time_interleaved, \
    timing_fields
from .variants import DENSE, Variant, build, has_mod_partner, inputs, macs, mod_partner, row_base


class Budget:
    """Seconds a section may take, bounded by the whole run's deadline (time.monotonic)."""

    def __init__(self, name: str, seconds: float, deadline: float) -> None:
        self.name, self.seconds, self.deadline = name, seconds, deadline
        self.start = time.monotonic()

    def spent(self) -> float:
        return time.monotonic() - self.start

    def refuse(self, reserve: float = 0.0) -> Optional[str]:
        """Why a unit of work may not start now (None: it may), keeping `reserve` seconds for what follows."""
        if time.monotonic() + reserve >= self.deadline:
            return "the whole run's deadline was reached"
        if self.spent() + reserve >= self.seconds:
            return f"section {self.name!r} spent its budget of {self.seconds:g} s"
        return None


@dataclass
class Context:
    """What every section needs: the device, the autocast dtype, the seed, a logger and the built models."""

    device: object  # torch.device
    dtype_name: str
    seed: int
    log: Callable[[str], None]
    models: dict = field(default_factory=dict)  # (model name, Variant) -> eager model at its own img_size

    @property
    def dtype(self):
        import torch
        return getattr(torch, self.dtype_name)

    def model(self, model_name: str, v: Variant):
        """The eager model of `v`, built once and shared by the eager sections: a ViT-B takes seconds
        to initialise on the host, 17 of them per section would eat the sections' budgets."""
        key = (model_name, v)
        if key not in self.models:
            self.models[key] = build(model_name, v, _img_size(model_name), self.device, self.seed)
        return self.models[key]


def _num_classes(model_name: str) -> int:
    from amod_bench.models import model_config
    return model_config(model_name)["num_classes"]


def _new_row(ctx: Context, model_name: str, v: Variant, img_size: int, batch: int, kind: str) -> dict:
    row = row_base(model_name, v, img_size, batch, ctx.device, ctx.dtype_name, kind)
    row["gmacs"], row["flop_ratio"] = macs(model_name, v, img_size, _num_classes(model_name))
    row["skipped"] = None
    return row


def _img_size(model_name: str) -> int:
    from amod_bench.models import model_config
    return model_config(model_name)["img_size"]


# ---- numerics


def numerics_rows(ctx: Context, model_name: str, vs: list[Variant], batch: int, budget: Budget) -> list[dict]:
    """bf16 vs fp32 for each variant (kind "numerics", check "bf16_vs_fp32"), then for each
    capacity the chunked A-MoD path against the explicit one in fp32 and bf16 ("chunked_vs_explicit")."""
    import torch
    size = _img_size(model_name)
    x, _ = inputs(size, batch, _num_classes(model_name), ctx.device, ctx.seed)
    rows = []
    for v in vs:
        row = _new_row(ctx, model_name, v, size, batch, "numerics")
        row.update(check="bf16_vs_fp32", dtype="bfloat16", reference="float32")
        rows.append(row)
        row["skipped"] = budget.refuse()
        if row["skipped"]:
            continue
        try:
            row.update(numerics.bf16_vs_fp32(ctx.model(model_name, v).eval(), x, ctx.device))
        except Exception as exn:
            row["error"] = error_text(exn)
        free(ctx.device)
    for capacity in sorted({v.capacity for v in vs if v.router == "amod"}):
        for dtype_name in ("float32", "bfloat16"):
            v = Variant("amod", capacity, "chunked")
            row = _new_row(ctx, model_name, v, size, batch, "numerics")
            row.update(check="chunked_vs_explicit", dtype=dtype_name, reference="explicit")
            rows.append(row)
            row["skipped"] = budget.refuse()
            if row["skipped"]:
                continue
            try:
                chunked = ctx.model(model_name, v).eval()  # numerics runs first: the seeded, untrained weights
                explicit = ctx.model(model_name, Variant("amod", capacity, "explicit")).eval()
                row.update(numerics.chunked_vs_explicit(chunked, explicit, x, ctx.device, getattr(torch, dtype_name)))
            except Exception as exn:
                row["error"] = error_text(exn)
            free(ctx.device)
    return rows


# ---- training steps


def set_compile_limits() -> None:
    """Let dynamo keep one compiled block per (block class, router, capacity) of a model.

    The default limit (8 entries per code object) would silently fall back to eager
    after the 8th variant of `RoutedBlock.forward`.
    """
    import torch._dynamo
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)


def compile_blocks(model, backend: str) -> None:
    """Regional compilation: each transformer block compiled on its own, static shapes."""
    for block in model.blocks:
        block.compile(backend=backend, dynamic=False)


def _graph_breaks() -> tuple[int, list[str]]:
    """(count, distinct first lines of the reasons) of the graph breaks dynamo counted since its reset."""
    from torch._dynamo.utils import counters
    breaks = counters["graph_break"]
    return sum(breaks.values()), sorted({str(reason).splitlines()[0][:200] for reason in breaks})


def train_rows(ctx: Context, model_name: str, vs: list[Variant], *, batch: int, warmup: int, iters: int,
               budget: Budget, compile_backend: Optional[str] = None, timing_reserve: float = 0.0) -> list[dict]:
    """Training steps (kind "train") of every variant of one model, timed interleaved.

    With `compile_backend`, each variant's blocks are compiled; its first step
    (compilation included) is timed as `compile_s`, and variants are compiled in
    the order given until the budget, less `timing_reserve` seconds kept for the
    timed rounds, is spent. Rows carry `train_step_mem_mb` (one step's peak).
    """
    import torch
    size = _img_size(model_name)
    x, y = inputs(size, batch, _num_classes(model_name), ctx.device, ctx.seed)
    if compile_backend:
        import torch._dynamo
        torch._dynamo.reset()  # a fresh cache per model: no guard of another model's shapes
        set_compile_limits()
    rows, steps, errors = {}, {}, {}
    for v in vs:
        row = rows[v] = _new_row(ctx, model_name, v, size, batch, "train")
        row.update(compiled=bool(compile_backend), compile_backend=compile_backend,
                   compile_scope="blocks" if compile_backend else None, optimizer="AdamW")
        row["skipped"] = budget.refuse(timing_reserve)
        if row["skipped"]:
            continue
        try:  # compiling changes the module: a fresh one, not the shared eager one
            model = (build(model_name, v, size, ctx.device, ctx.seed) if compile_backend
                     else ctx.model(model_name, v)).train()
            row["param_count"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
            row["depth"] = len(model.blocks)
            step = make_step(model, "train", x, y, ctx.device, ctx.dtype, make_optimizer(model, ctx.device))
            if compile_backend:
                from torch._dynamo.utils import counters
                counters.clear()
                compile_blocks(model, compile_backend)
                start = time.perf_counter()
                step()  # compiles the forward and the backward graphs
                sync(ctx.device)
                row["compile_s"] = time.perf_counter() - start
                row["graph_breaks"], row["graph_break_reasons"] = _graph_breaks()
            steps[v] = step
        except Exception as exn:
            errors[v] = error_text(exn)
            free(ctx.device)
        ctx.log(f"  {'compiled' if compile_backend else 'eager'} {model_name} {v.label}: "
                f"{row['skipped'] or errors.get(v) or 'ready'}"
                + (f" (compile {row['compile_s']:.1f} s)" if row.get("compile_s") else ""))
    times = time_interleaved(steps, warmup=warmup, iters=iters, device=ctx.device, errors=errors,
                             progress=lambda s: None) if steps else {}
    for v, step in steps.items():
        if v not in errors:
            try:
                rows[v]["train_step_mem_mb"] = step_peak_mb(step, ctx.device)
            except Exception as exn:
                errors[v] = error_text(exn)
    steps.clear()
    for v in rows:  # the shared eager models keep no gradients between sections
        if (model_name, v) in ctx.models:
            ctx.models[model_name, v].zero_grad(set_to_none=True)
    free(ctx.device)
    _fill_timings(rows, times, errors, "train", batch)
    return list(rows.values())


def _fill_timings(rows: dict, times: dict, errors: dict, mode: str, batch: int) -> None:
    for v, row in rows.items():
        row["error"] = errors.get(v)
        partner = mod_partner(v) if has_mod_partner(v) and mod_partner(v) in times else None
        row.update(timing_fields(mode, times.get(v, []), times.get(DENSE, []),
                                 None if partner is None else times[partner], batch=batch,
                                 flop_ratio=row["flop_ratio"]))


# ---- inference


def largest_batch(try_batch: Callable[[int], None], start: int, cap: int) -> tuple[int, str]:
    """The largest of start, 2 start, 4 start, ... <= cap for which `try_batch(batch)` does not run out of memory.

    Returns (batch, what stopped the search: "cap" or the out-of-memory error).
    Raises the error when even `start` does not fit.
    """
    import torch
    batch, fits = start, None
    while batch <= cap:
        try:
            try_batch(batch)
        except torch.OutOfMemoryError as exn:
            if fits is None:
                raise
            return fits, f"{error_text(exn)} at batch {batch}"
        fits, batch = batch, batch * 2
    return fits, "cap"


def infer_rows(ctx: Context, model_name: str, vs: list[Variant], *, batch: int, warmup: int, iters: int,
               budget: Budget, batch_policy: str, skip: Optional[str] = None) -> list[dict]:
    """Inference images/s (kind "infer") of every variant of one model at `batch`, timed interleaved.

    `skip`: a reason to record every variant as skipped without running it."""
    size = _img_size(model_name)
    x, y = inputs(size, batch, _num_classes(model_name), ctx.device, ctx.seed)
    rows, steps, errors = {}, {}, {}
    reason = skip or budget.refuse()
    for v in vs:
        row = rows[v] = _new_row(ctx, model_name, v, size, batch, "infer")
        row.update(batch_policy=batch_policy, compiled=False, skipped=reason)
        if reason:
            continue
        try:
            steps[v] = make_step(ctx.model(model_name, v).eval(), "infer", x, y, ctx.device, ctx.dtype)
        except Exception as exn:
            errors[v] = error_text(exn)
            free(ctx.device)
    times = time_interleaved(steps, warmup=warmup, iters=iters, device=ctx.device, errors=errors) if steps else {}
    steps.clear()
    free(ctx.device)
    _fill_timings(rows, times, errors, "infer", batch)
    return list(rows.values())


def max_infer_batch(ctx: Context, model_name: str, start: int, cap: int) -> tuple[int, str]:
    """`largest_batch` of the dense model's inference (the largest activations of all variants)."""
    size = _img_size(model_name)
    model = ctx.model(model_name, DENSE).eval()

    def try_batch(batch: int) -> None:
        x, y = inputs(size, batch, _num_classes(model_name), ctx.device, ctx.seed)
        make_step(model, "infer", x, y, ctx.device, ctx.dtype)()
        sync(ctx.device)
        del x, y
        free(ctx.device)

    try:
        return largest_batch(try_batch, start, cap)
    finally:
        free(ctx.device)
