"""`bench.py perf`: step time, peak memory and loader throughput of every routing variant.

    python bench.py perf --quick                                  # tiny preset, < 1 min on 2 CPU cores (CI)
    python bench.py perf --threads 1 --batch-size 8               # DeiT-S at 224 px on this CPU
    python bench.py perf --device cuda --dtype bfloat16 --batch-size 128 --mem-img-sizes 384,512   # a GPU

Methodology (timm's benchmark.py): build every configuration, warm each up, then
time synchronised steps (`torch.cuda.synchronize` on GPU) and report medians.
One change for shared machines: the timed steps are *interleaved* — each round
times every configuration once, in a rotating order — so load from other jobs
hits all configurations alike, and each ratio to dense (or to MoD) is the
median of the per-round ratios, measured seconds apart.

Per configuration (dense, isoflop, mod, amod, mod_tanh, random, cls at each capacity):
- `infer_*`: forward under `torch.no_grad()` in eval mode; `train_*`: zero_grad +
  forward + cross-entropy + backward in train mode (no optimizer step: its cost
  is per parameter, not per token, and would blur the routing comparison).
- `*_step_time` (ms, median), `*_samples_per_sec`, `*_time_ratio` (to dense),
  `flop_ratio` (forward MACs / dense MACs, `amod_bench.flops`), `*_efficiency`
  = flop_ratio / time_ratio (1.0: every FLOP saved is a second saved),
  `*_over_mod` (this router's time / MoD's at the same capacity).
- `train_step_mem_mb`: peak tensor memory of one training step above what was
  allocated before it (activations, gradients, temporaries; parameters and the
  input batch excluded). CUDA: `torch.cuda.max_memory_allocated` after
  `reset_peak_memory_stats`, minus `memory_allocated` before the step. CPU: the
  allocation and free events the c10 CPU allocator reports to `torch.profiler`
  (`profile_memory=True`), summed in time order: exact bytes of tensor storage.
  (RSS would be coarser: it counts the Python heap and allocator caching, moves
  in pages and never shrinks, so max-RSS deltas need one process per
  configuration and still blur 5% differences.)
- `--mem-img-sizes`: the same memory figure at other resolutions (rows with
  kind "memory"), e.g. A-MoD against MoD at 384 and 512 px.
- Loader (kind "loader"): images/s of one loader worker process decoding real
  RGB JPEGs (random crops of scikit-learn's two bundled photographs, 500x375,
  quality 90, written as WebDataset shards through `amod_bench.data`) with the
  training augmentation at the model's input size, against the samples/s of
  the training step it feeds; `workers_for_1_5x` is how many loader workers
  keep 1.5x ahead of that step.

An error in one configuration (out of memory or any other) becomes a row with
`error` set; the others still run. Output: a table on stdout, `<out>/<name>.json`
(`{"meta": {hardware, versions, arguments}, "rows": [flat dicts]}`) and
`<out>/<name>.png` (time ratio against FLOP ratio, with the ideal y = x).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

ROUTERS = ("dense", "isoflop", "mod", "amod", "mod_tanh", "random", "cls")
SCORED = ("amod", "cls")  # routers with a score_impl option

# --quick: the tiny preset and few iterations (CI); explicit options still win
QUICK = dict(model="vit_nano_patch7_28", batch_size=8, warmup=1, iters=3, mem_img_sizes="56",
             loader_images=24, loader_batch_size=8, threads=1)
DEFAULTS = dict(model="deit_small_patch16_224", batch_size=8, warmup=2, iters=7, mem_img_sizes="",
                loader_images=192, loader_batch_size=32, threads=None)


def _csv(kind: Callable):
    def parse(text: str):
        return [kind(part) for part in text.split(",") if part.strip()]
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"registered model (default {DEFAULTS['model']})")
    parser.add_argument("--routers", type=_csv(str), default=list(ROUTERS),
                        help=f"comma-separated routers (default {','.join(ROUTERS)})")
    parser.add_argument("--capacities", type=_csv(float), default=[0.125, 0.5],
                        help="comma-separated capacities C (default 0.125,0.5)")
    parser.add_argument("--score-impls", type=_csv(str), default=None,
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
    parser.add_argument("--modes", type=_csv(str), default=["infer", "train"], help="infer,train (default both)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--mem-img-sizes", help="comma-separated extra input sizes for peak memory only, "
                        "e.g. 384,512 (default none; --quick: 56)")
    parser.add_argument("--mem-routers", type=_csv(str), default=["dense", "mod", "amod"],
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


# ---- configuration


@dataclass(frozen=True)
class Variant:
    """One model configuration to benchmark."""

    router: str
    capacity: Optional[float]  # None for dense (it routes nothing)
    score_impl: Optional[str] = None  # amod / cls only; None: the model's default

    @property
    def label(self) -> str:
        parts = [self.router] + ([f"C={self.capacity:g}"] if self.capacity is not None else [])
        return " ".join(parts + ([self.score_impl] if self.score_impl else []))

    def build_kwargs(self) -> dict:
        kw = {"router": self.router}
        if self.capacity is not None:
            kw["capacity"] = self.capacity
        if self.score_impl:
            kw["score_impl"] = self.score_impl
        return kw


def variants(routers, capacities, score_impls) -> list[Variant]:
    out = []
    for router in routers:
        if router == "dense":
            out.append(Variant("dense", None))
            continue
        for c in capacities:
            impls = score_impls if (router in SCORED and score_impls) else [None]
            out += [Variant(router, c, impl) for impl in impls]
    if not any(v.router == "dense" for v in out):
        out.insert(0, Variant("dense", None))  # every ratio is to dense
    return out


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the --quick or normal defaults; validate names."""
    from amod_bench.models import list_models
    from amod_bench.routers import list_routers
    from amod_bench.routers.layout import SCORE_IMPLS, check_capacity

    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.mem_img_sizes = _csv(int)(args.mem_img_sizes) if isinstance(args.mem_img_sizes, str) else args.mem_img_sizes
    if args.model not in list_models():
        raise SystemExit(f"unknown model {args.model!r}; valid: {list_models()}")
    for router in list(args.routers) + list(args.mem_routers):
        if router not in list_routers():
            raise SystemExit(f"unknown router {router!r}; valid: {list_routers()}")
    for c in args.capacities:
        check_capacity(c)
    for impl in args.score_impls or []:
        if impl not in SCORE_IMPLS:
            raise SystemExit(f"unknown score impl {impl!r}; valid: {list(SCORE_IMPLS)}")
    for mode in args.modes:
        if mode not in ("infer", "train"):
            raise SystemExit(f"unknown mode {mode!r}; valid: infer, train")
    return args


# ---- hardware and versions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    import timm
    import torch
    import torchvision

    env = {
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "timm": timm.__version__, "torchvision": torchvision.__version__, "device": str(device),
        "gpu_name": None, "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(device)
    try:
        env["loadavg"] = list(os.getloadavg())  # how busy the machine was (shared CPUs)
    except OSError:
        env["loadavg"] = None
    return env


# ---- timing and memory


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device, dtype):
    import torch
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_step(model, mode: str, x, y, device, dtype) -> Callable[[], None]:
    """One inference or training step of `model` on (x, y), as a closure."""
    import torch
    import torch.nn.functional as F

    if mode == "infer":
        def step():
            with torch.no_grad(), _autocast(device, dtype):
                model(x)
    else:
        def step():
            model.zero_grad(set_to_none=True)
            with _autocast(device, dtype):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
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
    profiler gives no memory events.
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


def _error(exn: BaseException) -> str:
    return f"{type(exn).__name__}: {str(exn).splitlines()[0] if str(exn) else ''}"[:300]


def _free(device) -> None:
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
            _sync(device)
        except Exception as exn:  # OOM or anything else: an error row, not a crash
            errors[key] = _error(exn)
            _free(device)
    keys = list(steps)
    for r in range(iters):
        for i in range(len(keys)):
            key = keys[(i + r) % len(keys)]
            if key in errors:
                times[key].append(None)
                cpu[key].append(None)
                continue
            try:
                _sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                steps[key]()
                _sync(device)
                times[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
            except Exception as exn:
                errors[key] = _error(exn)
                times[key].append(None)
                cpu[key].append(None)
                _free(device)
        progress(f"round {r + 1}/{iters}")
    return times


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratios(num, den) -> list[float]:
    """Per-round num/den, only rounds where both were timed."""
    return [a / b for a, b in zip(num, den) if a is not None and b]


def _median_ratio(num, den) -> Optional[float]:
    """Median over rounds of num/den, using only rounds where both were timed."""
    return _median(_ratios(num, den))


def _ms(values) -> list[Optional[float]]:
    """Per-round seconds as milliseconds for the JSON (None: a round that was not timed)."""
    return [None if v is None else round(v * 1e3, 2) for v in values]


def _quartiles(values) -> tuple[Optional[float], Optional[float]]:
    values = sorted(values)
    if len(values) < 2:
        return (values[0], values[0]) if values else (None, None)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def _min_ratio(num, den) -> Optional[float]:
    """min(num) / min(den): contention on a shared machine only ever adds time, so the
    fastest step of each configuration is its least-disturbed one."""
    a, b = _fastest(num), _fastest(den)
    return a / b if a is not None and b else None


def _fastest(values) -> Optional[float]:
    return min((v for v in values if v is not None), default=None)


# ---- loader


def _write_jpegs(root: str, count: int, seed: int) -> None:
    """`count` real RGB photographs (random crops of sklearn's china/flower), 500x375 JPEG q90,
    as ImageFolder train/val trees with two classes."""
    import numpy as np
    import sklearn.datasets
    from PIL import Image

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    photos = [Image.open(os.path.join(folder, name)).convert("RGB") for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    n_val = max(2, count // 10)
    for i in range(count + n_val):
        label = i % 2
        photo = photos[label]
        w, h = photo.size
        cw = int(rng.integers(w // 2, w + 1))
        ch = min(h, int(cw * 3 / 4))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((500, 375), Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        split = "train" if i < count else "val"
        out = os.path.join(root, split, f"class{label}")
        os.makedirs(out, exist_ok=True)
        image.save(os.path.join(out, f"img{i:05d}.jpg"), quality=90)


def loader_throughput(*, images: int, workers: int, batch_size: int, img_size: int, mean, std,
                      seed: int = 0) -> dict:
    """Images/s of the training loader reading `images` JPEGs from shards (first batch excluded)."""
    from amod_bench.data import open_dataset, train_loader
    from amod_bench.data.sources import ImageFolderSource
    from amod_bench.data.writer import write_shards

    batch_size = max(1, min(batch_size, images // 2))
    with tempfile.TemporaryDirectory(prefix="amod_perf_loader_") as tmp:
        raw, shards = os.path.join(tmp, "raw"), os.path.join(tmp, "shards")
        _write_jpegs(raw, images, seed)
        write_shards(ImageFolderSource(raw, name="perf"), shards, num_shards=max(2, 2 * max(workers, 1)),
                     workers=1, progress=False, image_format="jpg")
        ds = open_dataset(shards)
        loader = train_loader(ds, "train", batch_size=batch_size, img_size=img_size, mean=mean, std=std,
                              seed=seed, epoch=0, rank=0, world_size=1, num_workers=workers)
        count, start = 0, None
        for batch in loader:
            if start is None:  # the first batch pays worker start-up and shard opening
                start = time.perf_counter()
                continue
            count += batch[0].shape[0]
        elapsed = time.perf_counter() - start if start is not None else 0.0
    rate = count / elapsed if count and elapsed > 0 else None
    return {"loader_images": images, "loader_workers": workers, "loader_batch_size": batch_size,
            "loader_img_size": img_size, "jpeg_size": "500x375", "jpeg_quality": 90,
            "images_timed": count, "images_per_sec": rate,
            "images_per_sec_per_worker": None if rate is None else rate / max(workers, 1)}


# ---- the benchmark


def _macs(model_name: str, v: Variant, img_size: int, num_classes: int) -> tuple[float, float]:
    from amod_bench import flops
    opts = {"score_impl": v.score_impl} if v.score_impl else {}
    dense = flops.count_macs(model_name, img_size=img_size, num_classes=num_classes).total
    if v.router == "dense":
        return dense / 1e9, 1.0
    macs = flops.count_macs(model_name, router=v.router, capacity=v.capacity, img_size=img_size,
                            num_classes=num_classes, **opts).total
    return macs / 1e9, macs / dense


def _build(args, v: Variant, img_size: int, device):
    import torch
    from amod_bench.models import build_model
    torch.manual_seed(args.seed)
    return build_model(args.model, img_size=img_size, **v.build_kwargs()).to(device)


def _inputs(args, img_size: int, batch: int, num_classes: int, device):
    import torch
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(batch, 3, img_size, img_size, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    return x, y


def _row_base(args, v: Variant, img_size: int, batch: int, device, dtype_name: str, kind: str) -> dict:
    from amod_bench.models import model_config
    from amod_bench.routers.layout import kept_tokens
    cfg = model_config(args.model)
    tokens = (img_size // cfg["patch_size"]) ** 2 + 1
    return {"kind": kind, "model": args.model, "router": v.router, "capacity": v.capacity,
            "score_impl": v.score_impl or (_default_impl() if v.router in SCORED else None),
            "img_size": img_size, "tokens": tokens,
            "kept_tokens": kept_tokens(tokens, v.capacity) if v.capacity is not None and v.router != "isoflop"
            else None, "batch_size": batch, "device": str(device), "dtype": dtype_name, "error": None}


def _default_impl() -> str:
    from amod_bench.routers.layout import DEFAULT_SCORE_IMPL
    return DEFAULT_SCORE_IMPL


def _mod_partner(v: Variant) -> Variant:
    return Variant("mod", v.capacity)


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

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    cfg = model_config(args.model)
    img_size = args.img_size or cfg["img_size"]
    num_classes = cfg["num_classes"]
    batch = args.batch_size
    meta = {"command": "python bench.py perf " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["perf"] else []),
            "arguments": {k: v for k, v in vars(args).items() if k != "func"}, "environment": environment(device),
            "methodology": "warm-up, then interleaved synchronised steps (one per configuration per round, "
                           "rotating order); medians over rounds; ratios are medians of per-round ratios",
            "mem_measure": "cuda max_memory_allocated - memory_allocated before the step" if device.type == "cuda"
            else "torch.profiler CPU allocator events (exact tensor bytes) above the pre-step level"}
    log(f"perf: {args.model} @ {img_size}px, batch {batch}, {device} {dtype_name}, "
        f"{torch.get_num_threads()} threads, warmup {args.warmup}, {args.iters} rounds")
    load = meta["environment"]["loadavg"]
    if device.type == "cpu" and torch.get_num_threads() > 1 and load and load[0] > (os.cpu_count() or 1) - 0.5:
        log(f"warning: load average {load[0]:.1f} on {os.cpu_count()} CPUs: with {torch.get_num_threads()} "
            "threads each op waits for a descheduled thread; --threads 1 gives steadier ratios")

    vs = variants(args.routers, args.capacities, args.score_impls)
    rows, models, errors = {}, {}, {}
    x, y = _inputs(args, img_size, batch, num_classes, device)
    for v in vs:
        row = _row_base(args, v, img_size, batch, device, dtype_name, "step")
        row["gmacs"], row["flop_ratio"] = _macs(args.model, v, img_size, num_classes)
        rows[v] = row
        try:
            models[v] = _build(args, v, img_size, device)
            row["param_count"] = round(sum(p.numel() for p in models[v].parameters()) / 1e6, 3)
            row["depth"] = len(models[v].blocks)
        except Exception as exn:
            errors[v] = _error(exn)
            _free(device)

    timings, cpu_timings = {}, {}
    for mode in args.modes:
        steps = {}
        for v, model in models.items():
            if v in errors:
                continue
            model.train(mode == "train")
            steps[v] = make_step(model, mode, x, y, device, dtype)
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
                errors[v] = _error(exn)
            model.zero_grad(set_to_none=True)
            _free(device)

    dense = Variant("dense", None)
    for v, row in rows.items():
        row["error"] = errors.get(v)
        for mode in args.modes:
            t = timings.get(mode, {}).get(v, [])
            med = _median(t)
            row[f"{mode}_step_time"] = None if med is None else med * 1e3
            row[f"{mode}_samples_per_sec"] = None if not med else batch / med
            row[f"{mode}_rounds"] = sum(s is not None for s in t)
            row[f"{mode}_times_ms"] = _ms(t)  # per round, raw
            fastest = _fastest(t)
            row[f"{mode}_step_time_min"] = None if fastest is None else fastest * 1e3
            base = timings[mode].get(dense, [])
            ratio = _median_ratio(t, base)
            row[f"{mode}_time_ratio"] = ratio
            row[f"{mode}_time_ratio_q1"], row[f"{mode}_time_ratio_q3"] = _quartiles(_ratios(t, base))
            row[f"{mode}_time_ratio_min"] = _min_ratio(t, base)
            row[f"{mode}_efficiency"] = row["flop_ratio"] / ratio if ratio else None
            partner = _mod_partner(v)
            has_partner = v.router not in ("dense", "mod") and partner in rows
            row[f"{mode}_over_mod"] = _median_ratio(t, timings[mode].get(partner, [])) if has_partner else None
            row[f"{mode}_over_mod_min"] = _min_ratio(t, timings[mode].get(partner, [])) if has_partner else None
            if device.type == "cpu":  # CPU seconds: what waiting for a core on a shared machine does not inflate
                c = cpu_timings.get(mode, {}).get(v, [])
                row[f"{mode}_cpu_time"] = None if _median(c) is None else _median(c) * 1e3
                row[f"{mode}_cpu_times_ms"] = _ms(c)
                row[f"{mode}_cpu_time_ratio"] = _median_ratio(c, cpu_timings[mode].get(dense, []))
                row[f"{mode}_cpu_over_mod"] = (_median_ratio(c, cpu_timings[mode].get(partner, []))
                                               if has_partner else None)
        if row.get("train_step_mem_mb") is not None and v.router not in ("dense", "mod"):
            mod_mem = rows.get(_mod_partner(v), {}).get("train_step_mem_mb")
            row["mem_over_mod"] = row["train_step_mem_mb"] / mod_mem if mod_mem else None
    models.clear()
    _free(device)
    out_rows = list(rows.values())

    if not args.no_memory and args.mem_img_sizes:
        out_rows += memory_rows(args, device, dtype, dtype_name, num_classes, log)

    if not args.no_loader:
        out_rows += loader_rows(args, cfg, img_size, out_rows, log)
    return {"meta": meta, "rows": out_rows}


def memory_rows(args, device, dtype, dtype_name, num_classes, log) -> list[dict]:
    """Peak training-step memory at each of --mem-img-sizes for --mem-routers."""
    batch = args.mem_batch_size or args.batch_size
    rows = []
    for size in args.mem_img_sizes:
        log(f"peak memory at {size}px, batch {batch}")
        x, y = _inputs(args, size, batch, num_classes, device)
        by_variant = {}
        for v in variants(args.mem_routers, args.capacities, args.score_impls):
            if v.router == "dense" and "dense" not in args.mem_routers:
                continue
            row = _row_base(args, v, size, batch, device, dtype_name, "memory")
            row["gmacs"], row["flop_ratio"] = _macs(args.model, v, size, num_classes)
            try:
                model = _build(args, v, size, device).train()
                row["train_step_mem_mb"] = step_peak_mb(make_step(model, "train", x, y, device, dtype), device)
                del model
            except Exception as exn:
                row["error"] = _error(exn)
            _free(device)
            by_variant[v] = row
        for v, row in by_variant.items():
            mod_mem = by_variant.get(_mod_partner(v), {}).get("train_step_mem_mb")
            row["mem_over_mod"] = (row["train_step_mem_mb"] / mod_mem
                                   if mod_mem and row.get("train_step_mem_mb") and v.router not in ("dense", "mod")
                                   else None)
        rows += by_variant.values()
    return rows


def loader_rows(args, cfg: dict, img_size: int, step_rows: list[dict], log) -> list[dict]:
    """Loader images/s per worker against the training step's samples/s (dense and the fastest routed)."""
    size = args.loader_img_size or img_size
    log(f"loader: {args.loader_images} JPEGs -> {size}px, {args.loader_workers} worker(s)")
    try:
        stats = loader_throughput(images=args.loader_images, workers=args.loader_workers,
                                  batch_size=args.loader_batch_size, img_size=size, mean=cfg["mean"], std=cfg["std"],
                                  seed=args.seed)
    except Exception as exn:
        return [{"kind": "loader", "error": _error(exn)}]
    timed = [r for r in step_rows if r["kind"] == "step" and r.get("train_samples_per_sec")]
    feeds = [r for r in timed if r["router"] == "dense"]
    routed = [r for r in timed if r["router"] != "dense"]
    if routed:
        feeds.append(max(routed, key=lambda r: r["train_samples_per_sec"]))
    rows = []
    for feed in feeds or [None]:
        row = {"kind": "loader", **stats, "error": None}
        per_worker = stats["images_per_sec_per_worker"]
        if feed is not None:
            need = feed["train_samples_per_sec"]
            row.update(feeds_router=feed["router"], feeds_capacity=feed["capacity"], feeds_model=feed["model"],
                       feeds_img_size=feed["img_size"], step_samples_per_sec=need,
                       loader_over_step=per_worker / need if per_worker else None,
                       workers_for_1_5x=math.ceil(1.5 * need / per_worker) if per_worker else None)
        rows.append(row)
    return rows


# ---- output


def _fmt(value, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def format_tables(result: dict) -> str:
    rows = result["rows"]
    lines = []
    steps = [r for r in rows if r["kind"] == "step"]
    header = (f"{'router':9s} {'C':>6s} {'impl':8s} {'k':>4s} {'GMACs':>6s} {'FLOPr':>6s} "
              f"{'inf ms':>8s} {'inf tr':>6s} {'inf eff':>7s} {'trn ms':>8s} {'trn tr':>6s} {'trn eff':>7s} "
              f"{'trn/s':>7s} {'/mod inf':>8s} {'/mod trn':>8s} {'mem MB':>8s} {'/mod mem':>8s}"
              f"{'  cpu tr':>8s} {'cpu/mod':>7s}")
    lines += ["step time (median ms), time ratio to dense (tr), FLOP ratio (FLOPr), efficiency = FLOPr / tr; "
              "/mod: time over MoD's at the same C; cpu: the train step's process CPU time (CPU devices)",
              header, "-" * len(header)]
    for r in steps:
        if r["error"]:
            lines.append(f"{r['router']:9s} {_fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
                         f"ERROR {r['error']}")
            continue
        lines.append(
            f"{r['router']:9s} {_fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
            f"{_fmt(r['kept_tokens'], 'd'):>4s} {_fmt(r['gmacs'], '.3f'):>6s} {_fmt(r['flop_ratio']):>6s} "
            f"{_fmt(r.get('infer_step_time'), '.1f'):>8s} {_fmt(r.get('infer_time_ratio')):>6s} "
            f"{_fmt(r.get('infer_efficiency')):>7s} {_fmt(r.get('train_step_time'), '.1f'):>8s} "
            f"{_fmt(r.get('train_time_ratio')):>6s} {_fmt(r.get('train_efficiency')):>7s} "
            f"{_fmt(r.get('train_samples_per_sec'), '.1f'):>7s} {_fmt(r.get('infer_over_mod')):>8s} "
            f"{_fmt(r.get('train_over_mod')):>8s} {_fmt(r.get('train_step_mem_mb'), '.1f'):>8s} "
            f"{_fmt(r.get('mem_over_mod')):>8s} {_fmt(r.get('train_cpu_time_ratio')):>7s} "
            f"{_fmt(r.get('train_cpu_over_mod')):>7s}")
    spread = [r for r in steps if not r["error"] and r.get("train_time_ratio_q1") is not None]
    if spread:
        lines += ["", "noise check, train step: time ratio to dense as median [quartiles] of per-round ratios, "
                  "ratio of the fastest steps (min), process-CPU-time ratio; /mod the same against MoD",
                  f"{'router':9s} {'C':>6s} {'impl':8s} {'FLOPr':>6s} {'median [q1, q3]':<22s} {'min':>6s} "
                  f"{'cpu':>6s} {'/mod med':>8s} {'/mod min':>8s} {'/mod cpu':>8s}"]
        for r in spread:
            lines.append(f"{r['router']:9s} {_fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
                         f"{_fmt(r['flop_ratio']):>6s} {_fmt(r['train_time_ratio']):>6s} "
                         f"[{_fmt(r['train_time_ratio_q1'])}, {_fmt(r['train_time_ratio_q3'])}] "
                         f"{_fmt(r.get('train_time_ratio_min')):>6s} {_fmt(r.get('train_cpu_time_ratio')):>6s} "
                         f"{_fmt(r.get('train_over_mod')):>8s} {_fmt(r.get('train_over_mod_min')):>8s} "
                         f"{_fmt(r.get('train_cpu_over_mod')):>8s}")
    mem = [r for r in rows if r["kind"] == "memory"]
    if mem:
        lines += ["", "peak training-step memory (MiB above the pre-step level)",
                  f"{'router':9s} {'C':>6s} {'impl':8s} {'px':>5s} {'batch':>5s} {'mem MB':>9s} {'/mod':>6s}"]
        for r in mem:
            lines.append(f"{r['router']:9s} {_fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
                         f"{r['img_size']:5d} {r['batch_size']:5d} "
                         + (f"ERROR {r['error']}" if r["error"] else
                            f"{_fmt(r.get('train_step_mem_mb'), '.1f'):>9s} {_fmt(r.get('mem_over_mod')):>6s}"))
    loader = [r for r in rows if r["kind"] == "loader"]
    if loader:
        lines += ["", "loader (JPEG decode + train augmentation, one worker process) vs the training step it feeds"]
        for r in loader:
            if r["error"]:
                lines.append(f"loader ERROR {r['error']}")
                continue
            feed = (f"; feeds {r['feeds_router']}" + (f" C={r['feeds_capacity']:g}" if r.get("feeds_capacity") else "")
                    + f" at {_fmt(r['step_samples_per_sec'], '.1f')} samples/s: loader/step "
                    f"{_fmt(r['loader_over_step'], '.2f')}, workers for 1.5x: {_fmt(r['workers_for_1_5x'], 'd')}"
                    if r.get("feeds_router") else "")
            lines.append(f"{_fmt(r['images_per_sec_per_worker'], '.1f')} images/s per worker "
                         f"({r['loader_workers']} worker(s), {r['loader_img_size']}px){feed}")
    return "\n".join(lines)


def write_json(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, path)


def write_figure(result: dict, path: str) -> bool:
    """Time ratio against FLOP ratio per configuration, with the ideal y = x; False if nothing to plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in result["rows"] if r["kind"] == "step" and not r["error"] and r["router"] != "dense"]
    points = [(r, mode) for r in steps for mode in ("train", "infer") if r.get(f"{mode}_time_ratio")]
    if not points:
        return False
    env = result["meta"]["environment"]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    colors = {name: plt.get_cmap("tab10")(i) for i, name in enumerate(ROUTERS)}
    ys = [r[f"{m}_time_ratio"] for r, m in points]
    hi = min(2.0, max([1.0] + ys + [r["flop_ratio"] for r, _ in points]) * 1.05)
    lo = max(0.0, min(ys + [r["flop_ratio"] for r, _ in points]) * 0.9)
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="ideal: time ratio = FLOP ratio")
    seen = set()
    for r, mode in points:
        label = r["router"] if r["router"] not in seen else None
        seen.add(r["router"])
        color = colors.get(r["router"], "k")
        y, q1, q3 = r[f"{mode}_time_ratio"], r.get(f"{mode}_time_ratio_q1"), r.get(f"{mode}_time_ratio_q3")
        if q1 is not None and q3 is not None:  # quartiles of the per-round ratios: the noise
            ax.errorbar(r["flop_ratio"], y, yerr=[[max(0.0, y - q1)], [max(0.0, q3 - y)]], color=color, lw=0.8,
                        alpha=0.5, capsize=2)
        ax.scatter(r["flop_ratio"], y, s=46, marker="o" if mode == "train" else "^",
                   facecolor=color if mode == "train" else "none", edgecolor=color, label=label, zorder=3)
        tag = f"{r['capacity']:g}" + (f" {r['score_impl'][:2]}" if r["router"] in SCORED else "")
        ax.annotate(tag, (r["flop_ratio"], r[f"{mode}_time_ratio"]), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("FLOP ratio to dense (analytic MACs)")
    ax.set_ylabel("measured time ratio to dense (median)")
    arg = result["meta"]["arguments"]
    hw = env["gpu_name"] or f"{env['cpu_model']}, {env['torch_threads']} thread(s)"
    ax.set_title(f"{arg['model']}, batch {arg['batch_size']}, {hw}\n"
                 "filled: train step (fwd+bwd), hollow: inference; bars: quartiles over rounds; "
                 "label: capacity", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def main(args: argparse.Namespace) -> int:
    args = _resolve(args)
    log = lambda text: print(text, flush=True)  # noqa: E731
    result = run_benchmark(args, log)
    print()
    print(format_tables(result))
    device = result["meta"]["environment"]["device"].split(":")[0]
    name = args.name or f"perf_{args.model}_{device}"
    json_path = os.path.join(args.out, f"{name}.json")
    write_json(result, json_path)
    print(f"\nwrote {json_path}")
    if not args.no_figure:
        png = os.path.join(args.out, f"{name}.png")
        if write_figure(result, png):
            print(f"wrote {png}")
    failed = [r for r in result["rows"] if r.get("error")]
    if failed:
        print(f"{len(failed)} configuration(s) failed (error rows in the JSON)")
    return 0
