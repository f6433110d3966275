"""The GPU run's summary: issue 22's goal ratios from the rows, as JSON and as markdown for benchmarks/RESULTS.md.

Goals (each "met", "not met" or "not measured"):
- `train_vs_flop`: training-step time ratio to dense within 10 % of the FLOP
  ratio, compiled, for the goal models at every capacity (routed rows);
- `amod_over_mod`: A-MoD's training-step time over MoD's at most 1.03, compiled;
- `infer_amod_vs_isoflop`: A-MoD's inference images/s over the isoFLOP
  model's (matched FLOPs) at least 1.0, the paper's claim, stated as a ratio.

Stdlib only: the GPU machine has no pandas (report/output.py's tables need it).
"""
from __future__ import annotations

from .measure import median_ratio

TRAIN_TOLERANCE = 0.10  # |time ratio / FLOP ratio - 1|
AMOD_OVER_MOD_MAX = 1.03
ROUTED_GOAL_ROUTERS = ("isoflop", "mod", "amod", "mod_tanh")


def _ok(row: dict) -> bool:
    return not row.get("error") and not row.get("skipped")


def _status(flags: list[bool]) -> str:
    return "not measured" if not flags else ("met" if all(flags) else "not met")


def _ident(row: dict) -> dict:
    return {key: row.get(key) for key in ("model", "router", "capacity", "score_impl", "batch_size")}


def goals(rows: list[dict], goal_models) -> dict:
    """{goal: {"status", "rows": [...]}} plus the memory and numerics digests."""
    train = [r for r in rows if r["kind"] == "train" and _ok(r) and r["router"] in ROUTED_GOAL_ROUTERS
             and r.get("train_time_ratio")]
    train_vs_flop = []
    for r in train:
        over = r["train_time_ratio"] / r["flop_ratio"]
        train_vs_flop.append({**_ident(r), "compiled": r["compiled"], "flop_ratio": r["flop_ratio"],
                              "time_ratio": r["train_time_ratio"], "time_ratio_q1": r.get("train_time_ratio_q1"),
                              "time_ratio_q3": r.get("train_time_ratio_q3"), "time_over_flop": over,
                              "within_10pct": abs(over - 1) <= TRAIN_TOLERANCE})
    amod_over_mod = [{**_ident(r), "compiled": r["compiled"], "over_mod": r["train_over_mod"],
                      "at_most_1_03": r["train_over_mod"] <= AMOD_OVER_MOD_MAX}
                     for r in train if r["router"] == "amod" and r.get("train_over_mod")]
    infer = [r for r in rows if r["kind"] == "infer" and _ok(r) and r.get("infer_times_ms")]
    isoflop = {(r["model"], r["batch_policy"], r["capacity"]): r for r in infer if r["router"] == "isoflop"}
    amod_vs_iso = []
    for r in infer:
        iso = isoflop.get((r["model"], r["batch_policy"], r["capacity"]))
        if r["router"] != "amod" or iso is None:
            continue
        ratio = median_ratio(iso["infer_times_ms"], r["infer_times_ms"])  # per-round images/s ratio
        amod_vs_iso.append({**_ident(r), "batch_policy": r["batch_policy"], "amod_images_per_sec":
                            r["infer_samples_per_sec"], "isoflop_images_per_sec": iso["infer_samples_per_sec"],
                            "amod_flop_ratio": r["flop_ratio"], "isoflop_flop_ratio": iso["flop_ratio"],
                            "amod_over_isoflop": ratio, "at_least_1": ratio is not None and ratio >= 1.0})
    goal_train = [g for g in train_vs_flop if g["compiled"] and g["model"] in goal_models]
    goal_amod = [g for g in amod_over_mod if g["compiled"]]
    memory = [{**_ident(r), "img_size": r["img_size"], "train_step_mem_mb": r.get("train_step_mem_mb"),
               "mem_over_mod": r.get("mem_over_mod")} for r in rows if r["kind"] == "memory" and _ok(r)]
    numerics = [{**_ident(r), "check": r["check"], "dtype": r["dtype"], "reference": r["reference"],
                 **{k: r.get(k) for k in ("kept_agreement_min", "kept_agreement_mean", "logit_max_abs_err",
                                          "logit_rel_err", "top1_agreement")}}
                for r in rows if r["kind"] == "numerics" and _ok(r)]
    compiled = [{**_ident(r), **{k: r.get(k) for k in ("compile_backend", "compile_s", "graph_breaks",
                                                        "graph_break_reasons", "error", "skipped")}}
                for r in rows if r["kind"] == "train" and r.get("compiled")]
    return {
        "train_vs_flop": {"status": _status([g["within_10pct"] for g in goal_train]),
                          "goal": f"compiled train step time ratio within {TRAIN_TOLERANCE:.0%} of the FLOP ratio "
                                  f"({', '.join(goal_models)})", "rows": train_vs_flop},
        "amod_over_mod": {"status": _status([g["at_most_1_03"] for g in goal_amod]),
                          "goal": f"compiled A-MoD train step over MoD's <= {AMOD_OVER_MOD_MAX}", "rows": amod_over_mod},
        "infer_amod_vs_isoflop": {"status": _status([g["at_least_1"] for g in amod_vs_iso]),
                                  "goal": "A-MoD inference images/s >= isoFLOP's at the same capacity",
                                  "rows": amod_vs_iso},
        "compile": {"rows": compiled},
        "memory": {"rows": memory},
        "numerics": {"rows": numerics},
    }


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return lines


def markdown(summary: dict, meta: dict, sections: dict) -> str:
    """The summary as markdown: machine, versions, command, each goal's status and rows, section statuses."""
    env = meta["environment"]
    lines = [f"## GPU performance ({env.get('gpu_name') or env['cpu_model']})", "",
             f"- machine: {env.get('gpu_name') or '-'} ({env.get('gpu_memory_gib') or '-'} GiB), "
             f"{env['cpu_model']}, {env['cpu_count']} CPUs",
             f"- versions: python {env['python']}, torch {env['torch']}, timm {env['timm']}, CUDA {env['cuda']}",
             f"- command: `{meta['command']}` ({meta['mode']}), date {env['date']}",
             f"- {meta['methodology']}", ""]
    goal = summary["train_vs_flop"]
    lines += [f"### Training step over dense vs FLOP ratio: {goal['status']}", "", goal["goal"], ""]
    lines += _table(goal["rows"], ["model", "router", "score_impl", "capacity", "compiled", "flop_ratio",
                                   "time_ratio", "time_ratio_q1", "time_ratio_q3", "time_over_flop", "within_10pct"])
    goal = summary["amod_over_mod"]
    lines += ["", f"### A-MoD over MoD (training step): {goal['status']}", "", goal["goal"], ""]
    lines += _table(goal["rows"], ["model", "score_impl", "capacity", "compiled", "over_mod", "at_most_1_03"])
    goal = summary["infer_amod_vs_isoflop"]
    lines += ["", f"### Inference: A-MoD vs isoFLOP: {goal['status']}", "", goal["goal"], ""]
    lines += _table(goal["rows"], ["model", "score_impl", "capacity", "batch_policy", "batch_size",
                                   "amod_images_per_sec", "isoflop_images_per_sec", "amod_flop_ratio",
                                   "isoflop_flop_ratio", "amod_over_isoflop"])
    lines += ["", "### torch.compile (per block): compile seconds (first step) and graph breaks", ""]
    lines += _table(summary["compile"]["rows"], ["model", "router", "score_impl", "capacity", "compile_backend",
                                                 "compile_s", "graph_breaks", "graph_break_reasons", "error",
                                                 "skipped"])
    lines += ["", "### Training-step memory at high resolution (MiB above the pre-step level)", ""]
    lines += _table(summary["memory"]["rows"], ["model", "router", "score_impl", "capacity", "img_size",
                                                "batch_size", "train_step_mem_mb", "mem_over_mod"])
    lines += ["", "### Numerics (kept-set agreement per routed block: min and mean over blocks)", ""]
    lines += _table(summary["numerics"]["rows"], ["model", "router", "score_impl", "capacity", "check", "dtype",
                                                  "reference", "kept_agreement_min", "kept_agreement_mean",
                                                  "logit_max_abs_err", "logit_rel_err", "top1_agreement"])
    lines += ["", "### Sections", ""]
    lines += _table([{"section": name, **info} for name, info in sections.items()],
                    ["section", "status", "seconds", "budget_s", "reason"])
    return "\n".join(lines) + "\n"
