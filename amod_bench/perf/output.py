"""Output of `bench.py perf`: the stdout tables and the figure (time ratio against FLOP ratio).

The JSON is written by `amod_bench.results.write_json_atomic`. Figures use
matplotlib, imported only when one is drawn.
"""
from __future__ import annotations

import math
import os

from amod_bench.routers.traits import router_colour, router_names

from .variants import scored


def finite_json(value):
    """`value` with every non-finite float, at any depth, as None: JSON has no NaN/inf, and
    results.write_json_atomic refuses them below the top level (e.g. an overflowed bf16 error)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def fmt(value, spec: str = ".3f") -> str:
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
            lines.append(f"{r['router']:9s} {fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
                         f"ERROR {r['error']}")
            continue
        lines.append(
            f"{r['router']:9s} {fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
            f"{fmt(r['kept_tokens'], 'd'):>4s} {fmt(r['gmacs'], '.3f'):>6s} {fmt(r['flop_ratio']):>6s} "
            f"{fmt(r.get('infer_step_time'), '.1f'):>8s} {fmt(r.get('infer_time_ratio')):>6s} "
            f"{fmt(r.get('infer_efficiency')):>7s} {fmt(r.get('train_step_time'), '.1f'):>8s} "
            f"{fmt(r.get('train_time_ratio')):>6s} {fmt(r.get('train_efficiency')):>7s} "
            f"{fmt(r.get('train_samples_per_sec'), '.1f'):>7s} {fmt(r.get('infer_over_mod')):>8s} "
            f"{fmt(r.get('train_over_mod')):>8s} {fmt(r.get('train_step_mem_mb'), '.1f'):>8s} "
            f"{fmt(r.get('mem_over_mod')):>8s} {fmt(r.get('train_cpu_time_ratio')):>7s} "
            f"{fmt(r.get('train_cpu_over_mod')):>7s}")
    spread = [r for r in steps if not r["error"] and r.get("train_time_ratio_q1") is not None]
    if spread:
        lines += ["", "noise check, train step: time ratio to dense as median [quartiles] of per-round ratios, "
                  "ratio of the fastest steps (min), process-CPU-time ratio; /mod the same against MoD",
                  f"{'router':9s} {'C':>6s} {'impl':8s} {'FLOPr':>6s} {'median [q1, q3]':<22s} {'min':>6s} "
                  f"{'cpu':>6s} {'/mod med':>8s} {'/mod min':>8s} {'/mod cpu':>8s}"]
        for r in spread:
            lines.append(f"{r['router']:9s} {fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
                         f"{fmt(r['flop_ratio']):>6s} {fmt(r['train_time_ratio']):>6s} "
                         f"[{fmt(r['train_time_ratio_q1'])}, {fmt(r['train_time_ratio_q3'])}] "
                         f"{fmt(r.get('train_time_ratio_min')):>6s} {fmt(r.get('train_cpu_time_ratio')):>6s} "
                         f"{fmt(r.get('train_over_mod')):>8s} {fmt(r.get('train_over_mod_min')):>8s} "
                         f"{fmt(r.get('train_cpu_over_mod')):>8s}")
    mem = [r for r in rows if r["kind"] == "memory"]
    if mem:
        lines += ["", "peak training-step memory (MiB above the pre-step level)",
                  f"{'router':9s} {'C':>6s} {'impl':8s} {'px':>5s} {'batch':>5s} {'mem MB':>9s} {'/mod':>6s}"]
        for r in mem:
            lines.append(f"{r['router']:9s} {fmt(r['capacity'], 'g'):>6s} {r['score_impl'] or '':8s} "
                         f"{r['img_size']:5d} {r['batch_size']:5d} "
                         + (f"ERROR {r['error']}" if r["error"] else
                            f"{fmt(r.get('train_step_mem_mb'), '.1f'):>9s} {fmt(r.get('mem_over_mod')):>6s}"))
    loader = [r for r in rows if r["kind"] == "loader"]
    if loader:
        lines += ["", "loader (JPEG decode + train augmentation, one worker process) vs the training step it feeds"]
        for r in loader:
            if r["error"]:
                lines.append(f"loader ERROR {r['error']}")
                continue
            feed = (f"; feeds {r['feeds_router']}" + (f" C={r['feeds_capacity']:g}" if r.get("feeds_capacity") else "")
                    + f" at {fmt(r['step_samples_per_sec'], '.1f')} samples/s: loader/step "
                    f"{fmt(r['loader_over_step'], '.2f')}, workers for 1.5x: {fmt(r['workers_for_1_5x'], 'd')}"
                    if r.get("feeds_router") else "")
            lines.append(f"{fmt(r['images_per_sec_per_worker'], '.1f')} images/s per worker "
                         f"({r['loader_workers']} worker(s), {r['loader_img_size']}px){feed}")
    return "\n".join(lines)


def _scored(router: str) -> bool:
    """Whether a row's router times its score paths apart, read from the declarations now (a router
    declared after perf was imported counts; one not declared in this process, e.g. in a JSON
    written elsewhere, does not)."""
    return router in router_names() and scored(router)


def draw_ratio_axes(ax, points, title: str) -> None:
    """Time ratio to dense against FLOP ratio on `ax`, one marker per (row, mode), with the ideal y = x.

    points: [(row, mode)] where row has `flop_ratio`, `capacity`, `router`, `score_impl`
    and `<mode>_time_ratio` (+ `_q1`/`_q3`, drawn as bars: the noise over rounds).
    Filled markers: training steps; hollow: inference.
    """
    ys = [r[f"{m}_time_ratio"] for r, m in points]
    xs = [r["flop_ratio"] for r, _ in points]
    hi = min(2.0, max([1.0] + ys + xs) * 1.05)
    lo = max(0.0, min(ys + xs) * 0.9)
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="ideal: time ratio = FLOP ratio")
    seen = set()
    for r, mode in points:
        label = r["router"] if r["router"] not in seen else None
        seen.add(r["router"])
        color = router_colour(r["router"])
        y, q1, q3 = r[f"{mode}_time_ratio"], r.get(f"{mode}_time_ratio_q1"), r.get(f"{mode}_time_ratio_q3")
        if q1 is not None and q3 is not None:
            ax.errorbar(r["flop_ratio"], y, yerr=[[max(0.0, y - q1)], [max(0.0, q3 - y)]], color=color, lw=0.8,
                        alpha=0.5, capsize=2)
        ax.scatter(r["flop_ratio"], y, s=46, marker="o" if mode == "train" else "^",
                   facecolor=color if mode == "train" else "none", edgecolor=color, label=label, zorder=3)
        tag = f"{r['capacity']:g}" + (f" {r['score_impl'][:2]}" if _scored(r["router"]) else "")
        ax.annotate(tag, (r["flop_ratio"], y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("FLOP ratio to dense (analytic MACs)")
    ax.set_ylabel("measured time ratio to dense (median)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="upper left")
    ax.grid(alpha=0.3)


def save_figure(fig, path: str) -> None:
    """Save and close `fig` (PNG through a temporary name, so no reader sees half a file)."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    os.replace(tmp, path)


def write_figure(result: dict, path: str) -> bool:
    """`bench.py perf`'s figure: every configuration's time ratio against its FLOP ratio; False if nothing to plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in result["rows"] if r["kind"] == "step" and not r["error"] and r["router"] != "dense"]
    points = [(r, mode) for r in steps for mode in ("train", "infer") if r.get(f"{mode}_time_ratio")]
    if not points:
        return False
    env = result["meta"]["environment"]
    arg = result["meta"]["arguments"]
    hw = env["gpu_name"] or f"{env['cpu_model']}, {env['torch_threads']} thread(s)"
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    draw_ratio_axes(ax, points, f"{arg['model']}, batch {arg['batch_size']}, {hw}\n"
                    "filled: train step, hollow: inference; bars: quartiles over rounds; label: capacity")
    fig.tight_layout()
    save_figure(fig, path)
    return True


GPU_PANELS = (("train", False, None, "train step, eager"), ("train", True, None, "train step, torch.compile"),
              ("infer", False, "paper", "inference, the paper's batch"), ("infer", False, "max", "inference, largest batch"))


def write_gpu_figure(result: dict, path: str) -> bool:
    """The GPU run's figure: one row of panels per model (train eager / compiled, inference at batch 100 /
    at the largest batch), time ratio against FLOP ratio; False if nothing to plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in result["rows"] if r["kind"] in ("train", "infer") and not r.get("error")
             and not r.get("skipped") and r["router"] != "dense" and r.get(f"{r['kind']}_time_ratio")]
    models = list(dict.fromkeys(r["model"] for r in timed))
    if not models:
        return False
    fig, axes = plt.subplots(len(models), len(GPU_PANELS), figsize=(4.2 * len(GPU_PANELS), 3.9 * len(models)),
                             squeeze=False)
    for i, model in enumerate(models):
        for j, (mode, compiled, policy, title) in enumerate(GPU_PANELS):
            points = [(r, mode) for r in timed if r["model"] == model and r["kind"] == mode
                      and bool(r.get("compiled")) == compiled and r.get("batch_policy") == policy]
            if not points:
                axes[i][j].set_axis_off()
                axes[i][j].set_title(f"{model}\n{title}: not measured", fontsize=8)
                continue
            batch = points[0][0]["batch_size"]
            draw_ratio_axes(axes[i][j], points, f"{model}\n{title} (batch {batch})")
    env = result["meta"]["environment"]
    fig.suptitle(f"{env.get('gpu_name') or env['cpu_model']}, torch {env['torch']}, autocast "
                 f"{result['meta']['dtype']}; bars: quartiles over rounds; labels: capacity", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return True
