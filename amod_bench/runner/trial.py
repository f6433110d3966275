"""One Ray Tune trial per cell: `run_cell` waits for the cell's dependencies, then fits one Ray
Train `TorchTrainer` (`ray_fast_path.trainer_class`) whose workers run `amod_bench.train`; the cell's
Train controller posts each report on the board (`report_poster`) and the trial hands it to Tune."""
from __future__ import annotations

import threading

from . import ray_fast_path
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

    from .ddp_backend import NodeBoundTorchConfig

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
    trainer = ray_fast_path.trainer_class(own_instance)(
        train_loop_per_worker,
        train_loop_config={"run": run},
        torch_config=NodeBoundTorchConfig(),  # the process group's store on the node's address only
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
