"""How a step is run, timed and its memory measured; the statistics of the timed rounds.

Timing follows timm's benchmark.py (warm-up excluded, synchronised steps,
medians), with one change for shared machines: the rounds are *interleaved*
(`time_interleaved`), so ratios between configurations are medians of
per-round ratios measured seconds apart.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device, dtype):
    import torch
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(model, device):
    """AdamW as in the paper's fine-tuning (lr 1e-5); the fused kernel on CUDA (one launch for all params)."""
    import torch
    return torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.05, fused=device.type == "cuda")


def make_step(model, mode: str, x, y, device, dtype, optimizer=None) -> Callable[[], None]:
    """One inference or training step of `model` on (x, y), as a closure.

    `model` may be a compiled module. Training: zero_grad, forward, cross-entropy,
    backward, and `optimizer.step()` when an optimizer is given.
    """
    import torch
    import torch.nn.functional as F

    if mode == "infer":
        def step():
            with torch.no_grad(), autocast(device, dtype):
                model(x)
    else:
        def step():
            model.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
    return step


_KINETO_NOISE = ("USDT", "profiler_st", "gpuGetDeviceCount",
                 "Memory block of unknown size")  # the last: frees of pre-step tensors, expected


@contextlib.contextmanager
def _quiet_fd2():
    """Silence kineto's start/stop chatter on stderr (fd 2) while the profiler runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if not any(noise in line for noise in _KINETO_NOISE):
                    print(line, file=sys.stderr)


def cpu_peak_bytes(fn: Callable[[], None]) -> Optional[int]:
    """Peak bytes of CPU tensor storage allocated by `fn` above what was live before it.

    Sums the allocation (+) and free (-) events that the c10 CPU allocator reports
    to torch.profiler with profile_memory=True, in time order; frees of tensors
    allocated before the call are not reported and do not count. None when the
    profiler gives no memory events. (RSS would be coarser: it counts the Python
    heap and allocator caching, moves in pages and never shrinks.)
    """
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [e for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    except AttributeError:  # a torch without the kineto results API
        return None
    if not events:
        return None
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def step_peak_mb(step: Callable[[], None], device) -> Optional[float]:
    """Peak tensor memory (MiB) of one call of `step` above what was allocated before it."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    peak = cpu_peak_bytes(step)
    return None if peak is None else peak / 2 ** 20


def error_text(exn: BaseException) -> str:
    """One line for an `error` column: the exception type and the first line of its message."""
    return f"{type(exn).__name__}: {str(exn).splitlines()[0] if str(exn) else ''}"[:300]


def free(device) -> None:
    import gc
    import torch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_interleaved(steps: dict, *, warmup: int, iters: int, device, errors: dict,
                     progress: Callable[[str], None] = lambda s: None, cpu_times: Optional[dict] = None) -> dict:
    """Seconds per step of every closure in `steps`: warm-up, then `iters` rounds.

    Each round times every still-working closure once (synchronised), starting at
    a rotating position. Returns {key: [seconds or None per round]}. A closure that
    raises gets its message in `errors[key]` and is dropped. `cpu_times`, if given,
    receives the process CPU seconds of the same steps (time.process_time).
    """
    times = {key: [] for key in steps}
    cpu = cpu_times if cpu_times is not None else {}
    cpu.update({key: [] for key in steps})
    for key, step in steps.items():
        try:
            for _ in range(warmup):
                step()
            sync(device)
        except Exception as exn:  # OOM or anything else: an error row, not a crash
            errors[key] = error_text(exn)
            free(device)
    keys = list(steps)
    for r in range(iters):
        for i in range(len(keys)):
            key = keys[(i + r) % len(keys)]
            if key in errors:
                times[key].append(None)
                cpu[key].append(None)
                continue
            try:
                sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                steps[key]()
                sync(device)
                times[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
            except Exception as exn:
                errors[key] = error_text(exn)
                times[key].append(None)
                cpu[key].append(None)
                free(device)
        progress(f"round {r + 1}/{iters}")
    return times


# ---- statistics of the rounds


def median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratios(num, den) -> list[float]:
    """Per-round num/den, only rounds where both were timed."""
    return [a / b for a, b in zip(num, den) if a is not None and b]


def median_ratio(num, den) -> Optional[float]:
    """Median over rounds of num/den, using only rounds where both were timed."""
    return median(ratios(num, den))


def ms(values) -> list[Optional[float]]:
    """Per-round seconds as milliseconds for the JSON (None: a round that was not timed)."""
    return [None if v is None else round(v * 1e3, 3) for v in values]


def quartiles(values) -> tuple[Optional[float], Optional[float]]:
    values = sorted(v for v in values if v is not None)
    if len(values) < 2:
        return (values[0], values[0]) if values else (None, None)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def fastest(values) -> Optional[float]:
    return min((v for v in values if v is not None), default=None)


def min_ratio(num, den) -> Optional[float]:
    """min(num) / min(den): contention on a shared machine only ever adds time, so the
    fastest step of each configuration is its least-disturbed one."""
    a, b = fastest(num), fastest(den)
    return a / b if a is not None and b else None


def timing_fields(mode: str, times, dense_times, partner_times, *, batch: int, flop_ratio: float) -> dict:
    """The `<mode>_*` columns of one configuration from its per-round seconds.

    `dense_times` / `partner_times`: the same rounds of dense and of the MoD
    partner (None: no partner). Times in ms, ratios are medians of per-round ratios.
    """
    med = median(times)
    quart = quartiles(times)
    ratio = median_ratio(times, dense_times)
    out = {
        f"{mode}_step_time": None if med is None else med * 1e3,
        f"{mode}_step_time_q1": None if quart[0] is None else quart[0] * 1e3,
        f"{mode}_step_time_q3": None if quart[1] is None else quart[1] * 1e3,
        f"{mode}_samples_per_sec": None if not med else batch / med,
        f"{mode}_rounds": sum(s is not None for s in times),
        f"{mode}_times_ms": ms(times),  # per round, raw
        f"{mode}_step_time_min": None if fastest(times) is None else fastest(times) * 1e3,
        f"{mode}_time_ratio": ratio,
        f"{mode}_time_ratio_min": min_ratio(times, dense_times),
        f"{mode}_efficiency": flop_ratio / ratio if ratio else None,
        f"{mode}_over_mod": None if partner_times is None else median_ratio(times, partner_times),
        f"{mode}_over_mod_min": None if partner_times is None else min_ratio(times, partner_times),
    }
    out[f"{mode}_time_ratio_q1"], out[f"{mode}_time_ratio_q3"] = quartiles(ratios(times, dense_times))
    return out
