"""Run a suite on Ray: one Ray Tune trial per cell, one Ray Train `TorchTrainer` per trial.

    python bench.py suites/quickstart.yaml                 # a local Ray instance, started and stopped here
    python bench.py run suites/transfer.yaml --address auto
    ray job submit --working-dir . -- python bench.py suites/transfer.yaml

Ray Tune only schedules: a trial waits for the cells it depends on (an earlier
stage's checkpoint, or a search stage's results), then fits one TorchTrainer
whose workers run `amod_bench.train.train_loop_per_worker` (with
`resources.prestart`, a cell that waits only for an earlier stage's checkpoint
fits as soon as that cell trains, and its workers do the rest of the waiting). Every report from
rank 0 reaches this driver process through Tune (the cell's controller posts it on
the suite's board actor, the cell's trial hands it to Tune), where `ResultsWriter`
turns it into the cell's result files; so results land on the machine that runs
`bench.py`, whichever nodes trained. Checkpoints live in Ray's storage (the
suite's `storage`), which must be a shared filesystem or an object store on a
multi-node cluster.

Rerunning a suite skips done cells, resumes unfinished ones from their last
checkpoint (Ray Train resumes a run given the same storage path and name), and
retries failed or diverged cells only with `--retry-failed`.
"""
from __future__ import annotations

import asyncio
import fnmatch
import math
import os
import platform
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from amod_bench.results import CellFiles, ResultsFolder

# Ray's knobs, in one place.
RAY_ENV = {
    # how often a cell's controller polls its workers: the delay between a cell's end and
    # the next cell's start, against the polling's CPU (Ray's default is 2 s)
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0",
}
# Only for a local instance. Ray turns a node address of 127.0.0.1 into the machine's
# routable address and listens there; with this flag off it keeps the node, and every
# server of the instance, on the loopback address. gloo must then use loopback too.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo",
                 # one machine is never preempted; the watcher is one more process per cell
                 "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# For this driver, where Tune runs. ResultsWriter writes each cell's files; Tune's own
# per-trial CSV and TensorBoard copies would only cost the driver CPU on every report (its JSON
# copy stays: run_suite passes JsonLoggerCallback, because the analysis Tune builds at the end of
# every fit reads it and warns about each trial without one). Tune's older console output prints
# nothing at verbose=0; its newer one prints an experiment box and paths at every verbosity.
DRIVER_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}
BOARD_WAIT_SECONDS = 60.0  # longest wait of one call to the board; it answers as soon as it can


# --------------------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    parser.add_argument("suite", help="suite YAML file")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                             "(default: start a local instance bound to 127.0.0.1)")
    parser.add_argument("--filter", action="append", default=[], metavar="PATTERN",
                        help="run only cells whose id matches this glob (or contains it); repeatable")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="cap on cells running at once (default: the suite's, bounded by the cluster)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard earlier results and checkpoints of the selected cells")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed and diverged cells again (they are skipped by default)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would run and exit")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a suite field, e.g. --set defaults.recipe.epochs=2")
    parser.add_argument("--allow-large-grid", dest="set", action="append_const", const="max_cells=null",
                        help="run a grid of more than the suite's max_cells (default 10,000) cells")
    parser.add_argument("--no-report", action="store_true",
                        help="skip writing the report (results/<suite>/report/) at the end")


def main(args) -> int:
    from amod_bench.suite import SuiteError, load_suite

    try:
        statuses = run_suite(args.suite, address=args.address, cell_filter=args.filter,
                             max_concurrent=args.max_concurrent, fresh=args.fresh,
                             retry_failed=args.retry_failed, dry_run=args.dry_run,
                             num_cpus=args.num_cpus, overrides=args.set)
    except (SuiteError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not (args.dry_run or args.no_report):
        from amod_bench.report.build import ReportOptions, build_report

        suite = load_suite(args.suite, overrides=args.set)
        _run_analyses(suite)
        report = build_report([suite.output], None, ReportOptions())
        print(f"report: {report.out}/index.md")
    return 0 if all(s in ("done", "skipped") for s in statuses.values()) or args.dry_run else 1


def _run_analyses(suite) -> None:
    """The suite's `analyses`, on the checkpoints its cells left; a failed analysis is reported, the report still written."""
    if not suite.analyses:
        return
    from amod_bench.analysis.cli import AnalysisError, analyze_importance

    for name in suite.analyses:  # validated: "importance" is the only one
        print(f"analysis: {name} (bench.py analyze {name} {suite.output})")
        try:
            analyze_importance(Path(suite.output))
        except AnalysisError as error:
            print(f"analysis {name} not written: {error}", file=sys.stderr)


class RunError(Exception):
    """A suite that cannot run as asked (missing data, a dependency not done, too few resources)."""


# --------------------------------------------------------------------------- planning what runs

def _matches(cell_id: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatch(cell_id, p) or p in cell_id for p in patterns)


def dependencies(config: dict) -> list[str]:
    """Cell ids a cell must wait for: its init_from cell and the cells of a search it selects from."""
    deps = [config["init_from"]] if config.get("init_from") else []
    if config.get("select"):
        deps += config["select"]["cells"]
    return deps


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


# --------------------------------------------------------------------------- Ray connection

def loopback_only() -> None:
    """Keep a local Ray instance on 127.0.0.1: the processes ray.init starts read the
    environment, and this driver must resolve its own node address the same way (Ray read
    the flag when it was imported, perhaps before this call)."""
    from ray._private import ray_constants

    os.environ.update(LOCAL_RAY_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def ray_messages_to(log_file: Path):
    """Ray's messages in this process (its start-up notices, Tune's bookkeeping) go to `log_file`;
    its errors reach the console too. Ray logs on its "ray" logger, which does not propagate, to a
    console handler of its own: that handler steps aside while the suite runs."""
    import logging

    import ray  # noqa: F401  (its import sets up the "ray" logger this replaces)

    ray_logger = logging.getLogger("ray")
    own_handlers, own_level = list(ray_logger.handlers), ray_logger.level
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setLevel(logging.ERROR)
    for handler in (to_file, to_console):  # ray.init gives them Ray's own format
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    for handler in own_handlers:
        ray_logger.removeHandler(handler)
    ray_logger.addHandler(to_file)
    ray_logger.addHandler(to_console)
    try:
        yield
    finally:
        ray_logger.removeHandler(to_file)
        ray_logger.removeHandler(to_console)
        to_file.close()
        for handler in own_handlers:
            ray_logger.addHandler(handler)
        ray_logger.setLevel(own_level)


def ray_env(local: bool, extra: dict | None = None) -> dict:
    """Environment variables for every Ray process this suite starts."""
    return {**RAY_ENV, **(LOCAL_RAY_ENV if local else {}), **(extra or {})}


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, worker_env: dict | None = None):
    """Connect to a cluster, or start a local instance bound to 127.0.0.1 and stop it afterwards.
    Yields True when the instance is this process's own (it ends with this process)."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        yield False
        return
    env = ray_env(local=not address, extra=worker_env)
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    else:
        loopback_only()
        # "local": a new instance even when another one runs on this machine (Ray's default
        # would join it)
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
                 include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        yield not address
    finally:
        ray.shutdown()


def launch_order(cells: list) -> list:
    """The order Tune starts cells in: stage by stage (a later stage waits for an earlier one),
    and within a stage the most training MACs first, so the cells that run alone at the end,
    when a slot has nothing left to take, are the cheapest."""
    stages = list(dict.fromkeys(c.stage for c in cells))
    return sorted(cells, key=lambda c: (stages.index(c.stage),
                                        -c.config["train_macs_per_sample"] * c.config["epochs"]))


def concurrency(cells, total: dict, suite_cap: int, cli_cap: int | None) -> int:
    """Cells at once: the suite's cap (or --max-concurrent), bounded by how many of the
    smallest cell fit the cluster. A bigger cell (a multi-worker pretrain before many
    one-worker fine-tunes) then waits in Ray's queue for its workers, and its controller
    retries the worker-group start until they are free, instead of serialising the suite.
    `total` is `ray.cluster_resources()`."""
    fits = []
    for cell in cells:
        r = cell.config["resources"]
        need_cpu = r["workers"] * r["cpus_per_worker"]
        need_gpu = r["workers"] * r["gpus_per_worker"]
        if need_cpu > total.get("CPU", 0) or need_gpu > total.get("GPU", 0):
            raise RunError(f"cell {cell.id} needs {need_cpu:g} CPUs and {need_gpu:g} GPUs; the cluster "
                           f"has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs")
        fits.append(min(total.get("CPU", 0) // need_cpu if need_cpu else math.inf,
                        total.get("GPU", 0) // need_gpu if need_gpu else math.inf))
    cap = cli_cap or suite_cap
    return int(max(1, min(cap, max(fits, default=1), len(cells))))


# --------------------------------------------------------------------------- one trial = one cell

def _remote_board():
    import ray

    @ray.remote(num_cpus=0)
    class CellBoard:
        """The suite's meeting point. Finished cells' summaries, so a trial on any node can wait
        for its dependencies; and running cells' reports, posted by each cell's Train controller
        and taken by its trial. (Tune's TuneReportCallback does the second through a queue
        actor per cell: one more process importing ray, ~3 CPU-s per cell on 2 cores.)
        Trials block on it instead of polling: every call to an actor costs both processes CPU."""

        def __init__(self, finished: dict):
            self.finished = finished
            self.reports: dict[str, list[dict]] = {}
            self.closed: set[str] = set()
            self.started: set[str] = set()  # cells that have reported at least once
            self.changed = asyncio.Condition()  # notified on every finish, post and close

        async def _changed(self) -> None:
            # one event loop runs every call: the state is already updated, waiters recheck it
            async with self.changed:
                self.changed.notify_all()

        async def _wait(self, ready, wait_seconds: float) -> None:
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait_for(ready), wait_seconds)
                except asyncio.TimeoutError:
                    pass

        async def finish(self, cell_id: str, summary: dict) -> None:
            self.finished[cell_id] = summary
            await self._changed()

        async def get(self, cell_ids: list[str], wait_seconds: float = 0.0) -> dict:
            """Summaries of these cells (None: not finished); waits up to wait_seconds for all."""
            await self._wait(lambda: all(cid in self.finished for cid in cell_ids), wait_seconds)
            return {cid: self.finished.get(cid) for cid in cell_ids}

        async def post(self, cell_id: str, report: dict) -> None:
            self.reports.setdefault(cell_id, []).append(report)
            self.started.add(cell_id)
            await self._changed()

        async def started_or_finished(self, cell_id: str, wait_seconds: float) -> bool:
            """Whether the cell has reported (its training has begun) or finished; waits up to
            wait_seconds for either."""
            def ready() -> bool:
                return cell_id in self.started or cell_id in self.finished
            await self._wait(ready, wait_seconds)
            return ready()

        async def close(self, cell_id: str) -> None:
            """The cell's run has ended: every report it will make is posted."""
            self.closed.add(cell_id)
            await self._changed()

        async def take(self, cell_id: str, wait_seconds: float) -> tuple[list[dict], bool]:
            """(the cell's reports not taken yet, oldest first; whether its run has ended).
            Waits up to wait_seconds for either."""
            await self._wait(lambda: bool(self.reports.get(cell_id)) or cell_id in self.closed, wait_seconds)
            return self.reports.pop(cell_id, []), cell_id in self.closed

    return CellBoard


def _report_poster(board, cell_id: str):
    import ray
    import ray.train

    class PostReports(ray.train.UserCallback):
        """In the cell's Train controller: posts rank 0's report, with the path its checkpoint
        was persisted to, on the board, for the cell's trial to hand to Tune."""

        def after_report(self, run_context, metrics, checkpoint):
            report = dict(metrics[0])
            if checkpoint is not None:
                report["checkpoint_path"] = checkpoint.path
            # waited for: the board is an async actor, which keeps the order of calls only
            # when each ends before the next; and the report is posted before the run can end
            ray.get(board.post.remote(cell_id, report))

    return PostReports()


def _select_value(select: dict, summaries: dict) -> object:
    """The search stage's winner: the value of `select.param` with the best mean `select.metric`
    over the search cells that finished (ties go to the first value listed)."""
    scores: dict = {}
    for cid, value in zip(select["cells"], select["values"]):
        summary = summaries[cid]
        if summary and summary["status"] == "done" and summary.get(select["metric"]) is not None:
            scores.setdefault(value, []).append(summary[select["metric"]])
    if not scores:
        raise RuntimeError(f"no cell of the search over {select['param']} finished: nothing to select")
    return max(scores, key=lambda v: sum(scores[v]) / len(scores[v]))


def cell_trainer_class(own_instance: bool):
    """TorchTrainer less the helper processes a cell has no use for.

    Ray's TrainController runs in the cell's trial process, in the thread that calls `fit()`,
    instead of in an actor of its own. Ray Tune's trial process only waits for the run, so a
    second process per cell bought nothing and cost its start and its imports (ray.train and,
    through the TorchConfig it unpickles, torch): ~11 CPU-seconds per cell, measured (3
    sequential fine-tune cells: 133-142 CPU-s against 166-179). Its workers and their
    synchronization actor are Ray's, unchanged; the workers' `controller_actor` handle is then
    the trial's actor, which only `ray.train.get_all_reported_checkpoints()` would call, and the
    training loop never does.

    Ray Train V2 also starts, besides each run's controller and workers, a DatasetManager (for
    Ray Data datasets; cells stream WebDataset shards themselves and pass none) and a
    detached PlacementGroupCleaner (which frees a run's placement group if its controller
    dies; a Ray instance of our own dies with this process anyway). Each is a process that
    imports ray.train: 3-4 CPU-seconds, measured, per cell and helper; on 2 cores the two
    cost the quickstart's 28 cells about 80 s (796 s with them, 717 s without, same day).
    The cleaner stays on a shared cluster. (`_create_default_callbacks` is Ray's private
    hook, as `_initialize_and_run_controller` is; tests/test_runner_select.py checks that these
    helpers, and only these, are left out, and tests/test_runner.py that a suite's run starts
    no TrainController actor, so a Ray upgrade that renames them fails there.)"""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    from ray.train.v2._internal.execution.controller import TrainController

    unused = (DatasetsCallback, PlacementGroupCleanerCallback) if own_instance else (DatasetsCallback,)

    class CellTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [cb for cb in super()._create_default_callbacks() if not isinstance(cb, unused)]

        def _initialize_and_run_controller(self, **controller_init_kwargs):
            controller = TrainController(**controller_init_kwargs)
            asyncio.run(controller.run())
            return controller.get_result()

    return CellTrainer


def _await_cells(board, cell_ids: list[str]) -> dict:
    """The summaries of these cells, once every one has finished."""
    import ray

    summaries = ray.get(board.get.remote(cell_ids, BOARD_WAIT_SECONDS))
    while any(s is None for s in summaries.values()):
        summaries = ray.get(board.get.remote(cell_ids, BOARD_WAIT_SECONDS))
    return summaries


def _parent_weights(parent_id: str, summary: dict) -> str:
    from amod_bench.train import CHECKPOINT_WEIGHTS

    if summary["status"] != "done" or not summary.get("checkpoint"):
        raise RuntimeError(f"cannot start: {parent_id}, whose checkpoint this cell starts from, "
                           f"ended {summary['status']}")
    return os.path.join(summary["checkpoint"], CHECKPOINT_WEIGHTS)


class ParentWeights:
    """`init_weights` of a prestarted cell (resources.prestart): called in the cell's workers once
    they are up, it waits for the parent cell to finish and returns its weights file."""

    def __init__(self, board, parent_id: str):
        self.board, self.parent_id = board, parent_id

    def __call__(self) -> str:
        return _parent_weights(self.parent_id, _await_cells(self.board, [self.parent_id])[self.parent_id])


def _resolved(config: dict, summaries: dict) -> dict:
    """The config values known only once the dependencies have finished: the initial weights
    ("timm", a local file, or the parent cell's weights) and a search's pick."""
    resolved = {"init_weights": config["pretrained_path"] or config["pretrained"]}
    if config.get("init_from"):
        resolved["init_weights"] = _parent_weights(config["init_from"], summaries[config["init_from"]])
    if config.get("select"):
        resolved[config["select"]["param"]] = _select_value(config["select"], summaries)
    return resolved


def run_cell(params: dict, *, cells: dict, board, storage: str, worker_env: dict, own_instance: bool) -> None:
    """A Tune function trainable: wait for dependencies, then fit the cell's TorchTrainer.

    With resources.prestart, a cell that only waits for its init_from parent fits once the
    parent trains, and its workers wait for the parent's weights: Ray's start-up (controller and
    worker processes, their imports) overlaps the parent's training instead of following it."""
    import ray
    import ray.train
    from ray import tune

    from amod_bench.train import train_loop_per_worker

    cell = cells[params["cell_id"]]
    config = dict(cell.config)
    deps = dependencies(config)
    prestart = config["resources"]["prestart"] and deps == [config.get("init_from")]
    if prestart:
        # The parent's start-up comes first: both are CPU-bound, and the parent's is on the
        # suite's critical path. Once it trains, this cell's start-up overlaps its training.
        while not ray.get(board.started_or_finished.remote(config["init_from"], BOARD_WAIT_SECONDS)):
            pass
        config["init_weights"] = ParentWeights(board, config["init_from"])
    else:
        resolved = _resolved(config, _await_cells(board, deps))
        config.update(resolved)
        tune.report({"resolved": resolved})

    resources = config["resources"]
    trainer = cell_trainer_class(own_instance)(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources["workers"], use_gpu=resources["gpus_per_worker"] > 0,
            resources_per_worker={"CPU": resources["cpus_per_worker"],
                                  "GPU": resources["gpus_per_worker"]}),
        run_config=ray.train.RunConfig(
            name=cell.id, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=resources["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=resources["checkpoints_to_keep"]),
            callbacks=[_report_poster(board, cell.id)],
            worker_runtime_env={"env_vars": worker_env} if worker_env else None),
    )
    # fit() blocks, so it runs beside this thread, which hands the cell's reports to Tune
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as error:  # raised again in the trial's thread below
            failure.append(error)
        finally:  # after the controller's last post: the trial takes everything, then stops
            ray.get(board.close.remote(cell.id))

    fitting = threading.Thread(target=fit, name=f"fit {cell.id}", daemon=True)
    fitting.start()
    if prestart:  # reported before any of the cell's rows, which come after the parent's end
        try:
            tune.report({"resolved": _resolved(config, _await_cells(board, deps))})
        except RuntimeError:  # the parent failed: the workers fail on the same check
            fitting.join()
            raise
    closed = False
    while not closed:
        reports, closed = ray.get(board.take.remote(cell.id, BOARD_WAIT_SECONDS))
        for report in reports:
            tune.report(report)
        if not (reports or closed or fitting.is_alive()):
            break  # fit ended without closing (the board call failed): nothing more will come
    if failure:
        raise failure[0]


# --------------------------------------------------------------------------- results, in the driver

def _provenance() -> dict:
    import ray
    import timm
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    # str(): torch.__version__ is torch's own str subclass, and unpickling it imports torch
    # (~3 CPU-s) in the board actor, which receives every summary
    return {"versions": {"torch": str(torch.__version__), "timm": timm.__version__, "ray": ray.__version__,
                         "python": platform.python_version()},
            "git_commit": commit}


def summarize(history: list[dict], status: str) -> dict:
    """Best and final accuracy and totals of a cell's metrics history."""
    evals = [row for row in history if row.get("val_top1") is not None]
    best = max(evals, key=lambda r: r["val_top1"], default=None)
    final = evals[-1] if evals else None
    last = history[-1] if history else {}
    return {"status": status,
            "best_top1": best and best["val_top1"], "best_top5": best and best["val_top5"],
            "best_epoch": best and best["epoch"],
            "final_top1": final and final["val_top1"], "final_top5": final and final["val_top5"],
            "train_seconds": last.get("train_seconds", 0.0), "eval_seconds": last.get("eval_seconds", 0.0),
            "train_macs": last.get("train_macs", 0),
            "steps": last.get("step", 0), "skipped": last.get("skipped", 0)}


def _callback_class():
    from ray import tune

    class ResultsWriter(tune.Callback):
        """Turns every trial event into result files; runs in the driver process only."""

        def __init__(self, results: ResultsFolder, cells: dict, progress, board, provenance: dict):
            self.results, self.cells, self.progress, self.board = results, cells, progress, board
            self.provenance = provenance
            self.history: dict[str, list[dict]] = {}
            self.extra: dict[str, dict] = {}  # per cell: checkpoint, hardware, diverged_at

        def _files(self, trial) -> tuple[str, CellFiles]:
            cell_id = trial.config["cell_id"]
            return cell_id, self.results.cell(cell_id)

        def _write_summary(self, cell_id: str, status: str, error: str | None = None) -> dict:
            config = self.cells[cell_id].config
            summary = {**summarize(self.history[cell_id], status), **self.provenance,
                       "params": config.get("params"), "gmacs": config.get("gmacs"),
                       "seed": config["seed"], "error": error,
                       "checkpoint": self.extra[cell_id].get("checkpoint"),
                       "hardware": self.extra[cell_id].get("hardware"),
                       "rank_checksums": self.extra[cell_id].get("rank_checksums"),
                       "diverged_at_step": self.extra[cell_id].get("diverged_at_step"),
                       # wall-clock of the Tune trial (Ray start-up and teardown included), summed
                       # over reruns; minus train_seconds and eval_seconds it is Ray's overhead
                       "wall_seconds": self.extra[cell_id]["earlier_wall_seconds"]
                       + time.monotonic() - self.extra[cell_id]["started"]}
            self.results.cell(cell_id).write_summary(summary)
            return summary

        def on_trial_start(self, iteration, trials, trial, **info):
            cell_id, files = self._files(trial)
            files.write_config(self.cells[cell_id].config)
            self.history[cell_id] = files.read_metrics()  # a resumed cell keeps its earlier rows
            previous = files.read_summary() or {}
            self.extra[cell_id] = {"checkpoint": previous.get("checkpoint"), "started": time.monotonic(),
                                   "earlier_wall_seconds": previous.get("wall_seconds") or 0.0}
            self._write_summary(cell_id, "running")
            self.progress.cell_started(cell_id)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            cell_id, files = self._files(trial)
            if "resolved" in result:  # values known only at run time: a search's pick, the init weights
                self.extra[cell_id]["started"] = time.monotonic()  # dependencies met: the cell starts now
                self.cells[cell_id].config.update(result["resolved"])
                files.write_config(self.cells[cell_id].config)
            row = result.get("row")
            if row is None:
                return
            if row.get("status") == "diverged":
                self.extra[cell_id]["diverged_at_step"] = row["step"]
                return
            for key in ("hardware", "rank_checksums"):  # per-run facts: they go to the summary
                if key in row:
                    self.extra[cell_id][key] = row[key]
            row = {k: v for k, v in row.items() if k not in ("status", "hardware", "rank_checksums")}
            if result.get("checkpoint_path"):
                self.extra[cell_id]["checkpoint"] = result["checkpoint_path"]
            # A worker group restarted from its last checkpoint reports again from there:
            # rows at or after the reported step are superseded, so no step appears twice.
            history = [r for r in self.history[cell_id] if r["step"] < row["step"]] + [row]
            self.history[cell_id] = history
            files.write_metrics(history)
            self._write_summary(cell_id, "running")
            self.progress.cell_evaluated(cell_id, row)

        def _finish(self, trial, status: str, error: str | None = None) -> None:
            cell_id, _ = self._files(trial)
            if status == "done" and self.extra[cell_id].get("diverged_at_step") is not None:
                status = "diverged"
            summary = self._write_summary(cell_id, status, error)
            self.board.finish.remote(cell_id, summary)
            self.progress.cell_ended(cell_id, status)

        def on_step_end(self, iteration, trials, **info):
            self.progress.tick()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finish(trial, "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            # Tune writes the error to the trial's local folder now and to storage later, which is
            # where get_error() reads it: at this point only the local file is sure to exist
            local = Path(trial.error_file) if trial.error_file else None
            error = (local.read_text() if local and local.exists() else trial.get_error()) \
                or "unknown error (see the Ray logs under /tmp/ray/session_latest/logs)"
            last_line = [line for line in str(error).strip().splitlines() if line.strip()][-1:]
            self._finish(trial, "failed", last_line[0] if last_line else str(error))

    return ResultsWriter


# --------------------------------------------------------------------------- the suite

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

    for cell in to_run:
        cell.config.update(cell_costs(cell.config))
        if fresh:
            results.remove_cell(cell.id)
            _remove_storage(suite.storage, cell.id)
    results.write_suite_copy(suite_path)
    plan_order = [(c.id, c.stage) for c in cells]
    results.write_index(suite.name, plan_order)

    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    os.environ.update(DRIVER_ENV)
    progress = SuiteProgress([c.id for c in to_run], {c.id: c.config["epochs"] for c in to_run})
    started = time.monotonic()
    log_file = results.root / "logs" / "driver.log"
    with ray_messages_to(log_file), ray_session(address, num_cpus, worker_env) as own_instance:
        import ray

        finished = {cid: results.cell(cid).read_summary() for c in to_run for cid in dependencies(c.config)
                    if cid not in {x.id for x in to_run}}
        board = _remote_board().remote(finished)
        at_once = concurrency(to_run, ray.cluster_resources(), suite.max_concurrent, max_concurrent)
        print(f"running {len(to_run)} cells, {at_once} at a time")
        trainable = tune.with_resources(
            tune.with_parameters(run_cell, cells={c.id: c for c in to_run}, board=board,
                                 storage=suite.storage, worker_env=worker_env or {},
                                 own_instance=own_instance),
            # The trial only drives its TorchTrainer; the workers hold the CPUs and GPUs. Tune
            # refuses an all-zero request, hence one byte of memory.
            {"cpu": 0, "memory": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"cell_id": tune.grid_search([c.id for c in launch_order(to_run)])},
            # reuse_actors: a finished trial's process runs the next cell, which saves each
            # cell a process start and its torch import (the trial only drives a TorchTrainer)
            tune_config=tune.TuneConfig(max_concurrent_trials=at_once, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=os.path.join(suite.storage, "_tune"), verbose=0,
                callbacks=[_callback_class()(results, {c.id: c for c in to_run}, progress, board,
                                             _provenance()), JsonLoggerCallback()]),
        )
        try:
            tuner.fit()
        finally:
            progress.close()
        ray.kill(board)
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
    print(f"Ray's messages: {log_file}")
    return {**statuses, **{cid: "skipped" for cid in skipped}}


def _remove_storage(storage: str, cell_id: str) -> None:
    import shutil

    if "://" not in storage:
        shutil.rmtree(os.path.join(storage, cell_id), ignore_errors=True)
