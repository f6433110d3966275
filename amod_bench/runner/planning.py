"""What a suite run starts, and how: the cells to run and those skipped, the order Tune starts
them in, and how many run at once."""
from __future__ import annotations

import fnmatch
import math
import sys

from amod_bench.results import ResultsFolder

from .inputs import dependencies


class RunError(Exception):
    """A suite that cannot run as asked (missing data, a dependency not done, too few resources)."""


def _matches(cell_id: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatch(cell_id, p) or p in cell_id for p in patterns)


def choose_cells(cells, results: ResultsFolder, *, cell_filter, fresh, retry_failed):
    """Split the expanded cells into those to run and those skipped (with why)."""
    to_run, skipped = [], {}
    for cell in cells:
        if not _matches(cell.id, cell_filter):
            continue
        files = results.cell(cell.id)
        for problem in files.problems():  # an unreadable summary.json reads as `unreadable`, never done
            print(f"warning: {problem}", file=sys.stderr)
        status = files.status()
        if not fresh and status == "done":
            skipped[cell.id] = "done"
        elif not fresh and status in ("failed", "diverged") and not retry_failed:
            skipped[cell.id] = f"{status} (use --retry-failed)"
        else:
            to_run.append(cell)
    running = {c.id for c in to_run}
    for cell in to_run:
        for dep in dependencies(cell.config):
            if dep not in running and results.cell(dep).status() != "done":
                raise RunError(f"cell {cell.id} needs {dep}, which is neither done nor selected to run "
                               f"(its status: {results.cell(dep).status()}); widen --filter")
    return to_run, skipped


def launch_order(cells: list, costs: dict) -> list:
    """The order Tune starts cells in: stage by stage (a later stage waits for an earlier one),
    and within a stage the most training MACs first, so the cells that run alone at the end,
    when a slot has nothing left to take, are the cheapest. `costs`: cell id -> CellCosts."""
    stages = list(dict.fromkeys(c.stage for c in cells))
    return sorted(cells, key=lambda c: (stages.index(c.stage),
                                        -costs[c.id].train_macs_per_sample * c.config.recipe.epochs))


def concurrency(cells, total: dict, suite_cap: int, cli_cap: int | None) -> int:
    """Cells at once: the suite's cap (or --max-concurrent), bounded by how many of the
    smallest cell fit the cluster. A bigger cell (a multi-worker pretrain before many
    one-worker fine-tunes) then waits in Ray's queue for its workers, and its controller
    retries the worker-group start until they are free, instead of serialising the suite.
    `total` is `ray.cluster_resources()`."""
    fits = []
    for cell in cells:
        r = cell.config.resources
        need_cpu = r.workers * r.cpus_per_worker
        need_gpu = r.workers * r.gpus_per_worker
        if need_cpu > total.get("CPU", 0) or need_gpu > total.get("GPU", 0):
            raise RunError(f"cell {cell.id} needs {need_cpu:g} CPUs and {need_gpu:g} GPUs; the cluster "
                           f"has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs")
        fits.append(min(total.get("CPU", 0) // need_cpu if need_cpu else math.inf,
                        total.get("GPU", 0) // need_gpu if need_gpu else math.inf))
    cap = cli_cap or suite_cap
    return int(max(1, min(cap, max(fits, default=1), len(cells))))
