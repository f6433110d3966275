"""One Ray Tune trial per cell: `run_cell` waits for the cell's dependencies, then fits one Ray
Train `TorchTrainer` (`cell_trainer_class`) whose workers run `amod_bench.train`; the cell's
Train controller posts each report on the board (`report_poster`) and the trial hands it to Tune."""
from __future__ import annotations

import asyncio
import threading

from .board import BOARD_WAIT_SECONDS
from .inputs import ParentWeights, await_cells, dependencies, resolved_inputs


def report_poster(board, cell_id: str):
    """The Train callback that posts the cell's reports on the board."""
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


def cell_trainer_class(own_instance: bool):
    """TorchTrainer less the helper processes a cell has no use for.

    Ray's TrainController runs in the cell's trial process, in the thread that calls `fit()`,
    instead of in an actor of its own. Ray Tune's trial process only waits for the run, so a
    second process per cell bought nothing and cost its start and its imports (ray.train and,
    through the TorchConfig it unpickles, torch). Its workers and their synchronization actor
    are Ray's, unchanged; the workers' `controller_actor` handle is then the trial's actor,
    which only `ray.train.get_all_reported_checkpoints()` would call, and the training loop
    never does.

    Ray Train V2 also starts, besides each run's controller and workers, a DatasetManager (for
    Ray Data datasets; cells stream WebDataset shards themselves and pass none) and a
    detached PlacementGroupCleaner (which frees a run's placement group if its controller
    dies; a Ray instance of our own dies with this process anyway). Each is a process that
    imports ray.train, for every cell. The cleaner stays on a shared cluster. (What both
    choices save: docs/DECISIONS.md.) `_create_default_callbacks` is Ray's private hook, as
    `_initialize_and_run_controller` is; tests/test_runner_select.py checks that these helpers,
    and only these, are left out, and tests/test_runner.py that a suite's run starts no
    TrainController actor, so a Ray upgrade that renames them fails there."""
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


def run_cell(params: dict, *, cells: dict, costs: dict, board, storage: str, worker_env: dict,
             own_instance: bool) -> None:
    """A Tune function trainable: wait for dependencies, then fit the cell's TorchTrainer.

    With resources.prestart, a cell that only waits for its init_from parent fits once the
    parent trains, and its workers wait for the parent's weights: Ray's start-up (controller and
    worker processes, their imports) overlaps the parent's training instead of following it."""
    import ray
    import ray.train
    from ray import tune

    from amod_bench.train import CellRun, train_loop_per_worker

    cell = cells[params["cell_id"]]
    config = cell.config
    deps = dependencies(config)
    prestart = config.resources.prestart and deps == [config.init_from]
    if prestart:
        # The parent's start-up comes first: both are CPU-bound, and the parent's is on the
        # suite's critical path. Once it trains, this cell's start-up overlaps its training.
        while not ray.get(board.started_or_finished.remote(config.init_from, BOARD_WAIT_SECONDS)):
            pass
        run = CellRun(config, costs[cell.id], init_weights=ParentWeights(board, config.init_from))
    else:
        resolved = resolved_inputs(config, await_cells(board, deps))
        run = CellRun(config, costs[cell.id], **resolved)
        tune.report({"resolved": resolved})

    resources = config.resources
    trainer = cell_trainer_class(own_instance)(
        train_loop_per_worker,
        train_loop_config={"run": run},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker={"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=cell.id, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=resources.checkpoints_to_keep),
            callbacks=[report_poster(board, cell.id)],
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
            tune.report({"resolved": resolved_inputs(config, await_cells(board, deps))})
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
