"""The prepared GPU run of issue 22: every section in one process, within a fixed wall-clock budget.

    python -m amod_bench.perf.gpu_run OUT              # the H200 plan (benchmarks/gpu/run.sh)
    python -m amod_bench.perf.gpu_run OUT --smoke      # the same code on one tiny model, on the CPU (CI)
    python -m amod_bench.perf.gpu_run OUT --plot-only  # summary and figure again from OUT/gpu_perf.json

Sections, in order (`gpu_sections` says what each measures): numerics,
train_eager, train_compiled, infer_paper_batch, infer_max_batch, memory_highres.
Each has a budget in seconds and the run a deadline; what a section had no time
for is recorded as skipped with the reason. `OUT/gpu_perf.json` (meta, section
statuses, rows) is rewritten after every section, so a run cut short keeps
what it measured; at the end `OUT/summary.json`, `OUT/summary.md` (issue 22's
goal ratios) and `OUT/gpu_perf.png` (time ratio against FLOP ratio; only when
matplotlib imports) are written.

Imports neither Ray, webdataset nor pandas: the GPU machine has torch, timm and
numpy only (benchmarks/gpu/README.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from amod_bench.provenance import git_commit

from .variants import DENSE, Variant, declared_routers, variants

SECTIONS = ("numerics", "train_eager", "train_compiled", "infer_paper_batch", "infer_max_batch", "memory_highres")
RESULT_NAME = "gpu_perf"
DEIT_T, DEIT_S, VIT_B = "deit_tiny_patch16_224", "deit_small_patch16_224", "vit_base_patch16_224"


@dataclass(frozen=True)
class Plan:
    """What one run measures, and the seconds each section may take."""

    models: tuple[str, ...]  # eager training steps and inference, in this order
    goal_models: tuple[str, ...]  # compiled training steps (issue 22's goal)
    routers: tuple[str, ...] = field(default_factory=declared_routers)
    capacities: tuple[float, ...] = (0.125, 0.5)
    score_impls: tuple[str, ...] = ("explicit", "chunked")  # amod and cls: each score path
    compile_routers: tuple[str, ...] = ("dense", "mod", "amod", "isoflop", "mod_tanh")  # priority order
    compile_capacities: tuple[float, ...] = (0.125, 0.5)
    compile_backend: str = "inductor"
    numerics_models: tuple[str, ...] = (DEIT_S,)
    numerics_batch: int = 64
    train_batch: int = 128  # the paper's fine-tuning batch
    infer_batch: int = 100  # the paper's throughput batch (App. A.10)
    max_batch_cap: int = 2048  # the largest-batch search stops here
    warmup: int = 3
    iters: int = 10
    max_batch_iters: int = 5
    compile_timing_reserve_s: float = 20.0  # per goal model: the compiled rounds after the compiles
    mem_model: str = DEIT_S
    mem_img_sizes: tuple[int, ...] = (384, 512)
    mem_routers: tuple[str, ...] = ("dense", "mod", "amod")
    mem_batch: int = 64
    threads: Optional[int] = None  # torch CPU threads (smoke: 1, a shared CI machine)
    deadline_s: float = 430.0  # the sections, imports excluded; run.sh's timeout (475 s) is above it
    budgets: dict = field(default_factory=lambda: {  # seconds per section; they sum to less than deadline_s
        "numerics": 25, "train_eager": 85, "train_compiled": 190, "infer_paper_batch": 30,
        "infer_max_batch": 60, "memory_highres": 30})


FULL = Plan(models=(DEIT_S, VIT_B, DEIT_T), goal_models=(DEIT_S, VIT_B))
SMOKE = Plan(models=("vit_nano_patch7_28",), goal_models=("vit_nano_patch7_28",), compile_routers=("dense", "mod", "amod"),
             compile_capacities=(0.5,), compile_backend="aot_eager", numerics_models=("vit_nano_patch7_28",),
             numerics_batch=8, train_batch=8, infer_batch=8, max_batch_cap=32, warmup=1, iters=3, max_batch_iters=2,
             compile_timing_reserve_s=1.0, mem_model="vit_nano_patch7_28", mem_img_sizes=(56,), mem_batch=4,
             threads=1, deadline_s=120.0, budgets={name: 40 for name in SECTIONS})


def compile_variants(plan: Plan) -> list[Variant]:
    """The compiled configurations in priority order: dense, then router by router, each capacity."""
    out = [DENSE]
    for router in plan.compile_routers:
        if router != "dense":
            out += [Variant(router, c, "explicit" if router == "amod" else None) for c in plan.compile_capacities]
    if "amod" in plan.compile_routers:  # the second score path last: the goal is met or not on the default one
        out += [Variant("amod", c, "chunked") for c in plan.compile_capacities]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="one tiny model, few steps, CPU-sized (CI)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--budget", action="append", default=[], metavar="SECTION=SECONDS",
                        help="override one section's budget (repeatable)")
    parser.add_argument("--deadline-s", type=float, help="the whole run's seconds (default: the plan's)")
    parser.add_argument("--command", help="the command line to record (run.sh passes its own)")
    parser.add_argument("--extra-site", action="append", default=[], metavar="DIR",
                        help="a folder of packages searched after the installed ones (run.sh's wheels)")
    parser.add_argument("--plot-only", action="store_true", help="only rewrite the summary and figure from the JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the synthetic batches")


def resolve_plan(args: argparse.Namespace) -> Plan:
    """The plan with --budget / --deadline-s applied; SystemExit on an unknown section or a bad number."""
    plan = SMOKE if args.smoke else FULL
    budgets = dict(plan.budgets)
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in SECTIONS:
            raise SystemExit(f"--budget {item!r}: unknown section {name!r}; valid: {list(SECTIONS)}")
        try:
            budgets[name] = float(seconds)
        except ValueError:
            raise SystemExit(f"--budget {item!r}: SECONDS must be a number") from None
        if budgets[name] < 0:
            raise SystemExit(f"--budget {item!r}: SECONDS must be >= 0")
    if args.deadline_s is not None and args.deadline_s <= 0:
        raise SystemExit("--deadline-s must be > 0")
    return dataclasses.replace(plan, budgets=budgets,
                               deadline_s=plan.deadline_s if args.deadline_s is None else args.deadline_s)


def selected_sections(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; valid: {list(SECTIONS)}")
    return [name for name in SECTIONS if name in names]  # always in the planned order


def run(args: argparse.Namespace, log=print) -> dict:
    """Run the selected sections; returns the result written to OUT/gpu_perf.json."""
    import torch

    from . import gpu_sections as S
    from .benchmark import METHODOLOGY, mem_measure, memory_rows, resolve_device
    from .environment import environment
    from .measure import error_text

    plan = resolve_plan(args)
    names = selected_sections(args.sections)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.smoke and args.device == "auto":
        raise SystemExit("gpu_run: no CUDA device; the full plan is sized for a GPU "
                         "(--smoke for the CPU, or --device cpu to insist)")
    start = time.monotonic()
    deadline = start + plan.deadline_s
    ctx = S.Context(device=device, dtype_name="bfloat16", seed=args.seed, log=log)  # bf16 autocast on any device
    result = {"meta": {"command": args.command or " ".join(["python -m amod_bench.perf.gpu_run", *sys.argv[1:]]),
                       "mode": "smoke" if args.smoke else "full", "plan": dataclasses.asdict(plan),
                       "sections_selected": names, "environment": environment(device), "git_commit": git_commit(),
                       "methodology": METHODOLOGY + "; quartiles of the per-round values", "dtype": ctx.dtype_name,
                       "mem_measure": mem_measure(device)},
              "sections": {}, "rows": []}
    log(f"gpu_run ({result['meta']['mode']}): {device}, autocast {ctx.dtype_name}, deadline {plan.deadline_s:g} s, "
        f"sections {names}")
    all_variants = variants(plan.routers, plan.capacities, plan.score_impls)

    def section_numerics(budget):
        vs = [v for v in all_variants if v.router != "random"]  # random routing differs between any two passes
        return [row for m in plan.numerics_models for row in S.numerics_rows(ctx, m, vs, plan.numerics_batch, budget)]

    def section_train_eager(budget):
        return [row for m in plan.models for row in S.train_rows(ctx, m, all_variants, batch=plan.train_batch,
                                                                 warmup=plan.warmup, iters=plan.iters, budget=budget)]

    def section_train_compiled(budget):
        rows = []
        for i, m in enumerate(plan.goal_models):  # an equal share of what is left, per model
            share = (budget.seconds - budget.spent()) / (len(plan.goal_models) - i)
            sub = S.Budget(f"train_compiled {m}", max(0.0, share), deadline)
            rows += S.train_rows(ctx, m, compile_variants(plan), batch=plan.train_batch, warmup=plan.warmup,
                                 iters=plan.iters, budget=sub, compile_backend=plan.compile_backend,
                                 timing_reserve=plan.compile_timing_reserve_s)
        return rows

    def section_infer_paper_batch(budget):
        return [row for m in plan.models for row in S.infer_rows(ctx, m, all_variants, batch=plan.infer_batch,
                                                                 warmup=plan.warmup, iters=plan.iters, budget=budget,
                                                                 batch_policy="paper")]

    def section_infer_max_batch(budget):
        rows = []
        for m in plan.models:
            found, stop = None, budget.refuse()
            if not stop:
                try:
                    found, stop = S.max_infer_batch(ctx, m, plan.infer_batch, plan.max_batch_cap)
                except Exception as exn:  # even the paper's batch does not fit
                    stop = f"batch search failed: {error_text(exn)}"
            part = S.infer_rows(ctx, m, all_variants, batch=found or plan.infer_batch, warmup=1,
                                iters=plan.max_batch_iters, budget=budget, batch_policy="max",
                                skip=None if found else stop)
            for row in part:
                row.update(max_batch_cap=plan.max_batch_cap, max_batch_stop=stop)
            rows += part
        return rows

    def section_memory_highres(budget):
        rows = []
        for size in plan.mem_img_sizes:
            reason = budget.refuse()
            if reason:
                rows.append({"kind": "memory", "model": plan.mem_model, "img_size": size, "skipped": reason,
                             "error": None})
                continue
            rows += memory_rows(plan.mem_model, plan.mem_routers, plan.capacities, list(plan.score_impls), size,
                                plan.mem_batch, device, ctx.dtype_name, args.seed, log)
        return rows

    sections = {"numerics": section_numerics, "train_eager": section_train_eager,
                "train_compiled": section_train_compiled, "infer_paper_batch": section_infer_paper_batch,
                "infer_max_batch": section_infer_max_batch, "memory_highres": section_memory_highres}
    for name in names:
        budget = S.Budget(name, plan.budgets[name], deadline)
        log(f"[{time.monotonic() - start:6.1f} s] {name} (budget {plan.budgets[name]:g} s)")
        status = {"budget_s": plan.budgets[name], "status": "done", "reason": None}
        try:
            rows = sections[name](budget)
        except Exception as exn:  # a section's own failure (not one configuration's): recorded, the run goes on
            rows, status["status"], status["reason"] = [], "failed", error_text(exn)
        for row in rows:
            row.setdefault("skipped", None)
            row["section"] = name
        skipped = [r["skipped"] for r in rows if r.get("skipped")]
        if skipped:
            status.update(status="skipped" if len(skipped) == len(rows) else "partial", reason=skipped[0])
        status["seconds"] = round(budget.spent(), 1)
        result["sections"][name] = status
        result["rows"] += rows
        write_result(args.out, result)
        log(f"  {name}: {status['status']} in {status['seconds']} s" + (f" ({status['reason']})"
                                                                      if status["reason"] else ""))
    result["meta"]["wall_s"] = round(time.monotonic() - start, 1)
    write_result(args.out, result)
    return result


def write_result(out: str, result: dict) -> None:
    from amod_bench.results import write_json_atomic

    from .output import finite_json
    write_json_atomic(os.path.join(out, f"{RESULT_NAME}.json"), finite_json(result))


def finish(out: str, result: dict, log=print) -> None:
    """Write OUT/summary.json, OUT/summary.md and, when matplotlib imports, OUT/gpu_perf.png."""
    from amod_bench.results import write_json_atomic, write_text_atomic

    from .output import finite_json
    from .summary import goals, markdown

    summary = goals(result["rows"], result["meta"]["plan"]["goal_models"])
    write_json_atomic(os.path.join(out, "summary.json"), finite_json({"meta": result["meta"],
                                                                      "sections": result["sections"], "goals": summary}))
    write_text_atomic(os.path.join(out, "summary.md"), markdown(summary, result["meta"], result["sections"]))
    for goal in ("train_vs_flop", "amod_over_mod", "infer_amod_vs_isoflop"):
        log(f"goal {goal}: {summary[goal]['status']}")
    try:
        import matplotlib  # noqa: F401  (optional on the GPU machine: benchmarks/gpu/fetch_wheels.sh)
    except ImportError:
        log("no matplotlib: figure not drawn (draw it later with --plot-only)")
        return
    from .output import write_gpu_figure
    path = os.path.join(out, f"{RESULT_NAME}.png")
    if write_gpu_figure(result, path):
        log(f"wrote {path}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amod_bench.perf.gpu_run", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    sys.path.extend(args.extra_site)  # after site-packages: the machine's own torch/numpy always win
    log = lambda text: print(text, flush=True)  # noqa: E731
    if args.plot_only:
        from amod_bench.results import read_json
        path = os.path.join(args.out, f"{RESULT_NAME}.json")
        if not os.path.isfile(path):
            raise SystemExit(f"--plot-only: no {path}")
        result = read_json(path)
    else:
        resolve_plan(args)  # bad options fail before torch is imported
        selected_sections(args.sections)
        result = run(args, log)
    finish(args.out, result, log)
    failed = [r for r in result["rows"] if r.get("error")]
    log(f"wrote {os.path.join(args.out, RESULT_NAME + '.json')}, summary.json, summary.md; "
        f"{len(failed)} configuration(s) failed (error rows)")
    return 0


if __name__ == "__main__":
    status = main()
    # interpreter teardown would walk every object torch and matplotlib made (seconds, under run.sh's timeout)
    import gc
    gc.freeze()
    sys.exit(status)
