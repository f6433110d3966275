"""Synthetic results folders in the exact layout of docs/ARCHITECTURE.md, for the report tests.

Curves are piecewise linear in epochs (`knots`), evaluated at every epoch
1..epochs; every other unit is linear in epochs with a per-cell rate, so a
time-to-target is known in closed form in all four units:

    epoch e*  ->  step = steps_per_epoch * e*, train_macs = macs_per_epoch * e*,
                  train_seconds = seconds_per_epoch * e*

as long as the target is crossed on a segment whose ends are evals (knots at
integer epochs).

    root = write_suite(tmp_path, "toy", [cell("dense", None, 0, [(0, 20), (6, 80)]), ...])
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GMACS_DENSE = 1.25  # deit-tiny-ish at 224 px


def gmacs_of(router: str, capacity: float | None) -> float:
    """Inference GMACs per image: dense full, the others scale with capacity (isoflop a bit below)."""
    if router == "dense":
        return GMACS_DENSE
    c = 1.0 if capacity is None else capacity
    frac = 0.5 + 0.5 * c  # half the blocks routed
    return round(GMACS_DENSE * (frac - 0.04 if router == "isoflop" else frac), 6)


@dataclass
class Cell:
    router: str
    capacity: float | None
    seed: int
    knots: list[tuple[float, float]]  # (epoch, val_top1) knots of a piecewise-linear curve
    status: str | None = "done"  # done | failed | diverged | running | None (no summary.json)
    epochs: int = 10
    model: str = "vit_tiny"
    dataset: str = "digits"
    stage: str = "finetune"
    steps_per_epoch: int = 100
    macs_per_epoch: float | None = None  # default: 3 x gmacs x 1e9 x 6400 samples
    seconds_per_epoch: float = 10.0
    noise: float = 0.0  # std of Gaussian noise on val_top1 (seeded by `seed`)
    step0: bool = False  # log a step-0 eval (epoch 0, the knots' value there), as cells with init_from do
    extra: dict = field(default_factory=dict)  # extra config keys (lr, cls_policy, targets, ...)
    metrics_tail: str = ""  # raw text appended to metrics.jsonl (e.g. a truncated line)
    checkpoint: str | None = None
    cell_id: str | None = None

    @property
    def id(self) -> str:
        if self.cell_id:
            return self.cell_id
        cap = "full" if self.capacity is None else f"c{self.capacity:g}"
        tail = "".join(re.sub(r"[^A-Za-z0-9._-]", "_", f"-{k}{v}") for k, v in sorted(self.extra.items())
                       if k != "targets" and not k.endswith("_path"))
        return f"{self.stage}-{self.model}-{self.dataset}-{self.router}-{cap}{tail}-s{self.seed}"


def curve_at(knots, epoch):
    xs, ys = zip(*knots)
    return float(np.interp(epoch, xs, ys))


def metrics_of(c: Cell) -> list[dict]:
    gmacs = gmacs_of(c.router, c.capacity)
    macs_per_epoch = c.macs_per_epoch if c.macs_per_epoch is not None else 3 * gmacs * 1e9 * 6400
    rng = np.random.default_rng(c.seed)
    rows = []
    for e in range(0 if c.step0 else 1, c.epochs + 1):
        top1 = curve_at(c.knots, e) + (rng.normal(0, c.noise) if c.noise else 0.0)
        if c.status == "diverged" and e > c.epochs // 2:
            top1 = None  # the results writer stores non-finite numbers as null
        rows.append({
            "step": c.steps_per_epoch * e, "epoch": float(e), "samples": 64 * c.steps_per_epoch * e,
            "train_macs": macs_per_epoch * e, "train_seconds": c.seconds_per_epoch * e, "eval_seconds": 0.5 * e,
            "lr": 1e-4, "grad_norm": 1.0 / max(e, 0.5),
            "train_loss": 2.0 / e if e else None, "val_top1": top1, "val_top5": None if top1 is None else min(100.0, top1 + 15.0),
            "val_loss": 1.0 / max(e, 0.5), "skipped": 0,
        })
    return rows


def config_of(c: Cell, suite: str) -> dict:
    gmacs = gmacs_of(c.router, c.capacity)
    config = {
        "id": c.id, "suite": suite, "stage": c.stage, "model": c.model, "router": c.router,
        "capacity": c.capacity, "routed_layers": None if c.router in ("dense", "isoflop") else [1, 3, 5, 7, 9, 11],
        "cls_policy": "compete", "dataset": c.dataset, "seed": c.seed, "lr": 1e-4, "optimizer": "adamw",
        "epochs": c.epochs, "batch_size": 64, "params": 5_700_000, "gmacs": gmacs,
        "train_macs_per_sample": 3 * gmacs * 1e9, "flop_ratio_dense": gmacs / GMACS_DENSE, "img_size": 224,
        "num_classes": 10, "init_from": f"pretrain-{c.model}-{c.dataset}-s{c.seed}", "router_options": {},
        "targets": {"within_peak_pct": 2.0, "top1": None},
        "resources": {"workers": 1, "cpus_per_worker": 2, "gpus_per_worker": 0},
        # the suite's grid axes: the standard ones plus every extra key a test varies
        "axes": ["model", "dataset", "router", "capacity", "routed_layers", "cls_policy", "seed",
                 *(k for k in c.extra if k not in ("targets", "axes"))],
    }
    config.update(c.extra)
    return config


def summary_of(c: Cell, metrics: list[dict]) -> dict:
    tops = [m["val_top1"] for m in metrics]
    finite = [(t, i) for i, t in enumerate(tops) if t is not None]
    best, bi = max(finite, key=lambda p: (p[0], -p[1])) if finite else (None, None)
    return {
        "status": c.status, "best_top1": best, "best_top5": metrics[bi]["val_top5"] if finite else None,
        "best_epoch": metrics[bi]["epoch"] if finite else None, "final_top1": tops[-1] if tops else None,
        "final_top5": metrics[-1]["val_top5"] if metrics else None,
        "train_seconds": metrics[-1]["train_seconds"] if metrics else 0.0,
        "train_macs": metrics[-1]["train_macs"] if metrics else 0.0, "params": 5_700_000,
        "gmacs": gmacs_of(c.router, c.capacity), "seed": c.seed,
        "error": {"failed": "RuntimeError: CUDA out of memory", "diverged": "loss is nan at step 600"}.get(c.status),
        "checkpoint": c.checkpoint, "versions": {"torch": "2.14.1", "timm": "1.0.31", "ray": "2.60.0", "python": "3.11"},
        "git_commit": "0" * 40, "hardware": "synthetic",
    }


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def write_cell(suite_dir: Path, c: Cell, suite: str) -> Path:
    cell_dir = suite_dir / "cells" / c.id
    cell_dir.mkdir(parents=True, exist_ok=True)
    metrics = metrics_of(c)
    if c.status == "failed":
        metrics = metrics[: max(1, len(metrics) // 3)]
    _dump(cell_dir / "config.json", config_of(c, suite))
    lines = "".join(json.dumps(m) + "\n" for m in metrics)
    (cell_dir / "metrics.jsonl").write_text(lines + c.metrics_tail)
    if c.status is not None:  # None: killed before its first summary
        _dump(cell_dir / "summary.json", summary_of(c, metrics))
    return cell_dir


def write_suite(root: Path, name: str, cells: list[Cell]) -> Path:
    """results/<name>/ with suite.yaml, index.json and one folder per cell; returns the folder."""
    suite_dir = Path(root) / name
    (suite_dir / "cells").mkdir(parents=True, exist_ok=True)
    (suite_dir / "suite.yaml").write_text(f"name: {name}\n# synthetic suite written by tests/fixtures_report.py\n")
    for c in cells:
        write_cell(suite_dir, c, name)
    _dump(suite_dir / "index.json", {"suite": name, "cells": [
        {"id": c.id, "stage": c.stage, "status": c.status or "pending"} for c in cells]})
    return suite_dir


# ---------------------------------------------------------------- known-answer suite
# dense reaches 80 (its peak) at epoch 6 exactly; amod twice as fast in epochs
DENSE_KNOTS = [(0, 20.0), (6, 80.0), (10, 80.0)]
AMOD_KNOTS = [(0, 20.0), (3, 80.0), (10, 80.0)]
MOD_KNOTS = [(0, 20.0), (4, 80.0), (10, 80.0)]
ISO_KNOTS = [(0, 20.0), (5, 80.0), (10, 80.0)]
SLOW_KNOTS = [(0, 20.0), (10, 70.0)]  # never reaches the common target 80


def known_suite(root: Path, name: str = "known", seeds=(0, 1, 2), **kw) -> Path:
    """Noiseless suite with analytically known times (see tests/test_report_convergence.py)."""
    cells = []
    for s in seeds:
        cells.append(Cell("dense", None, s, DENSE_KNOTS, **kw))
        cells.append(Cell("isoflop", 0.5, s, ISO_KNOTS, **kw))
        cells.append(Cell("mod", 0.5, s, MOD_KNOTS, **kw))
        cells.append(Cell("amod", 0.5, s, AMOD_KNOTS, seconds_per_epoch=5.0, **kw))
        cells.append(Cell("random", 0.5, s, SLOW_KNOTS, **kw))
    return write_suite(root, name, cells)


def synthetic_suite(root: Path, name: str = "synthetic", *, models=("vit_tiny", "vit_small"), capacities=(0.125, 0.5),
                    seeds=(0, 1, 2, 3), epochs=50, routers=("isoflop", "mod", "amod", "mod_tanh", "random", "cls")) -> Path:
    """A realistic grid (2 models x (dense + 2 capacities x 6 routers) x 4 seeds = 104 cells, 50 evals each)."""
    speed = {"dense": 1.0, "isoflop": 0.9, "mod": 0.8, "amod": 1.3, "mod_tanh": 1.0, "random": 0.6, "cls": 1.1}
    peak = {"dense": 80.0, "isoflop": 76.0, "mod": 79.0, "amod": 82.0, "mod_tanh": 80.5, "random": 72.0, "cls": 81.0}
    cells = []
    for model in models:
        for s in seeds:
            for router in ("dense", *routers):
                for cap in ([None] if router == "dense" else capacities):
                    p = peak[router] - (0 if cap is None else (0.5 - cap) * 4)
                    knee = 0.4 * epochs / speed[router]
                    knots = [(0, 10.0), (knee, p - 3), (epochs, p)]
                    cells.append(Cell(router, cap, s, knots, epochs=epochs, model=model, noise=0.3,
                                      seconds_per_epoch=10.0 * (1 if cap is None else 0.5 + cap)))
    return write_suite(root, name, cells)
