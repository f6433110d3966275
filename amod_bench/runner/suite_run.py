"""`run_suite`: every unfinished cell of a suite as one Ray Tune trial, from the plan printed
before to the summary printed after; the cells' result files are written in this process."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager

from amod_bench.provenance import software
from amod_bench.results import ResultsFolder

from .board import remote_board
from .inputs import dependencies
from .planning import RunError, choose_cells, concurrency, launch_order
from . import ray_fast_path
from .ray_session import DRIVER_ENV, loopback_only, ray_messages_to, ray_session
from .tracking import tracking_callbacks
from .trial import run_cell
from .writer import results_writer_class


class ResultsNotWritable(RunError):
    """A result file could not be written (a full disk, a read-only folder): the suite stopped."""


def run_suite(suite_path, *, address=None, cell_filter=(), max_concurrent=None, fresh=False,
              retry_failed=False, dry_run=False, num_cpus=None, overrides=(), worker_env=None) -> dict[str, str]:
    """Run every unfinished cell of a suite; returns {cell id: final status} for the selected cells."""
    from amod_bench.costs import cell_costs
    from amod_bench.progress import SuiteProgress
    from amod_bench.suite import expand, load_suite

    suite = load_suite(suite_path, overrides=list(overrides))  # also refuses missing datasets
    cells = expand(suite)
    results = ResultsFolder(suite.output)
    to_run, skipped = choose_cells(cells, results, cell_filter=list(cell_filter), fresh=fresh,
                                   retry_failed=retry_failed)

    print(f"suite {suite.name}: {len(cells)} cells, {len(to_run)} to run, {len(skipped)} skipped "
          f"-> {results.root}")
    for cell_id, why in skipped.items():
        print(f"  skip {cell_id}: {why}")
    if dry_run or not to_run:
        for cell in to_run:
            print(f"  would run {cell.id}")
        return {**{c.id: "pending" for c in to_run}, **{cid: "skipped" for cid in skipped}}

    costs = {cell.id: cell_costs(cell.config) for cell in to_run}
    for cell in to_run:
        if fresh:
            results.remove_cell(cell.id)
            _remove_storage(suite.storage, cell.id)
    results.write_suite_copy(suite_path)
    plan_order = [(c.id, c.stage) for c in cells]
    results.write_index(suite.name, plan_order)

    os.environ.update(DRIVER_ENV)
    if not address:
        loopback_only()  # before Ray's first import in this process
    from ray import tune
    from ray.tune.error import TuneError
    from ray.tune.logger import JsonLoggerCallback

    progress = SuiteProgress([c.id for c in to_run], {c.id: c.config.recipe.epochs for c in to_run})
    started = time.monotonic()
    log_file = results.root / "logs" / "driver.log"
    with ray_messages_to(log_file), ray_session(address, num_cpus, worker_env) as own_instance:
        import ray

        finished = {cid: results.cell(cid).read_summary() for c in to_run for cid in dependencies(c.config)
                    if cid not in {x.id for x in to_run}}
        board = remote_board().remote(finished)
        at_once = concurrency(to_run, ray.cluster_resources(), suite.max_concurrent, max_concurrent)
        ray_fast_path.say_which_path()
        print(f"running {len(to_run)} cells, {at_once} at a time")
        cells_to_run = {c.id: c for c in to_run}
        writer = results_writer_class()(results, cells_to_run, costs, progress, board, software())
        trainable = tune.with_resources(
            tune.with_parameters(run_cell, cells=cells_to_run, costs=costs, board=board,
                                 storage=suite.storage, worker_env=worker_env or {},
                                 own_instance=own_instance),
            # The trial only drives its TorchTrainer; the workers hold the CPUs and GPUs. Tune
            # refuses an all-zero request, hence one byte of memory.
            {"cpu": 0, "memory": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"cell_id": tune.grid_search([c.id for c in launch_order(to_run, costs)])},
            # reuse_actors: a finished trial's process runs the next cell, which saves each
            # cell a process start and its torch import (the trial only drives a TorchTrainer)
            tune_config=tune.TuneConfig(max_concurrent_trials=at_once, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=os.path.join(suite.storage, "_tune"), verbose=0,
                stop=writer.stopper,
                callbacks=[writer, JsonLoggerCallback(),
                           *tracking_callbacks(suite, cells_to_run, costs, log_file)]),
        )
        results.reserve_space()
        try:
            with sigterm_as_sigint():
                tuner.fit()
        except TuneError:  # a callback of ours raised: a bug, not a cell's failure
            raise
        except Exception as error:  # noqa: BLE001 - Tune's own bookkeeping after the cells ended
            # (its ResultGrid reads back files from storage, which a full disk leaves empty); the
            # cells' results are this folder's, written as each event came
            logging.getLogger("ray").exception("Ray Tune failed after the cells ended")
            print(f"note: Ray Tune's own files in {suite.storage} could not be read back "
                  f"({type(error).__name__}: {error}); the cells' results are unaffected")
        finally:
            progress.close()
            results.free_reserve()
        ray.kill(board)
    if writer.write_error is None:
        results.write_index(suite.name, plan_order)

    statuses = {c.id: results.cell(c.id).status() for c in to_run}
    counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
    print(f"finished in {time.monotonic() - started:.0f}s: "
          + ", ".join(f"{n} {s}" for s, n in counts.items())
          + (f", {len(skipped)} skipped" if skipped else ""))
    for cid, status in statuses.items():
        if status != "done":
            summary = results.cell(cid).read_summary() or {}
            print(f"  {status}: {cid} {summary.get('error') or ''}")
    unfinished = [cid for cid, status in statuses.items() if status in ("running", "pending")]
    if unfinished:  # interrupted (Ctrl-C): Ray's own advice, Tuner.restore, is not how bench.py resumes
        print(f"interrupted: {len(unfinished)} cells unfinished. To resume, run the same command again: "
              f"finished cells are skipped and each unfinished one continues from its last checkpoint.")
    print(f"Ray's messages: {log_file}")
    if writer.write_error is not None:
        raise ResultsNotWritable(
            f"{writer.write_error}. The suite stopped; every result written before is intact, and no "
            f"report was written. Free space (or make {results.root} writable), then run the same command "
            "again with --retry-failed (the failed cell resumes from its last checkpoint)")
    return {**statuses, **{cid: "skipped" for cid in skipped}}


@contextmanager
def sigterm_as_sigint():
    """SIGTERM (a scheduler's preemption, `timeout`, `docker stop`) stops the suite as Ctrl-C does:
    Tune ends its trials, the summary says what to rerun. Python's default would end this process
    on the spot, unsummarized."""
    if threading.current_thread() is not threading.main_thread():  # only there can a handler be set
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_storage(storage: str, cell_id: str) -> None:
    import shutil

    if "://" not in storage:
        shutil.rmtree(os.path.join(storage, cell_id), ignore_errors=True)
