"""Every use of Ray's private API, in one module, on the Ray versions it was tested on only.

A cell is one short Ray Train run, so on a small machine Ray's per-run helpers cost as much as
the training (docs/DECISIONS.md: "A cell's Train controller runs in its trial's process", "A
cell's trainer leaves out Ray Train's DatasetManager ..."). The fast path saves them with Ray
Train internals, which change between releases, so it is switched on only for the versions in
`TESTED_RAY_VERSIONS`, each of which ran the Ray-dependent tests with it. Any other version in
the range pyproject.toml declares gets Ray's public API (a plain `TorchTrainer`, Ray's own
knobs), after one line saying so; `AMOD_BENCH_RAY_PUBLIC=1` asks for the public path on a
tested version too (to compare the two, benchmarks/RESULTS.md).

What the fast path does:
- the cell's TrainController runs in the thread of the trial that calls `fit()`
  (`TorchTrainer._initialize_and_run_controller`, a private method, overridden);
- the cell leaves out Ray Train's DatasetManager always and, on a Ray instance of this process's
  own, its PlacementGroupCleaner (`TorchTrainer._create_default_callbacks`, private);
- Ray Train's internal knobs `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S` (1 s instead of 2 s between a
  cell's end and the next cell's start) and `RAY_TRAIN_ENABLE_PREEMPTION_WATCHER` (off on one
  machine: one process fewer per cell).
"""
from __future__ import annotations

import asyncio
import os

TESTED_RAY_VERSIONS = ("2.60.0",)
PUBLIC_ENV = "AMOD_BENCH_RAY_PUBLIC"  # "1": Ray's public path on every version

ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0"}  # every Ray process of a suite
LOCAL_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}  # a local instance's: one machine is never preempted

_said = False


def enabled() -> bool:
    import ray

    return ray.__version__ in TESTED_RAY_VERSIONS and os.environ.get(PUBLIC_ENV) != "1"


def say_which_path() -> None:
    """One line, once per process, when this Ray version takes the public path."""
    global _said
    import ray

    if _said or enabled():
        return
    _said = True
    why = (f"{PUBLIC_ENV}=1" if ray.__version__ in TESTED_RAY_VERSIONS else
           f"its fast path is tested on Ray {', '.join(TESTED_RAY_VERSIONS)} only")
    print(f"Ray {ray.__version__}: cells run on Ray's public API ({why}); each cell then starts a few "
          "more Ray processes")


def env(local: bool) -> dict:
    """Ray Train's internal knobs for every process of the suite, on the fast path only."""
    return {**ENV, **(LOCAL_ENV if local else {})} if enabled() else {}


def trainer_class(own_instance: bool):
    """The cell's TorchTrainer class: Ray's own, or (fast path) one less its helper processes.

    Fast path: Ray's TrainController runs in the cell's trial process, in the thread that calls
    `fit()`, instead of in an actor of its own; Ray Tune's trial process only waits for the
    run, so a second process per cell bought nothing and cost its start and its imports
    (ray.train and, through the TorchConfig it unpickles, torch). Its workers and their
    synchronization actor are Ray's, unchanged; the workers' `controller_actor` handle is then
    the trial's actor, which only `ray.train.get_all_reported_checkpoints()` would call, and
    the training loop never does. It also leaves out the DatasetManager (for Ray Data
    datasets; cells stream WebDataset shards themselves and pass none) and, on a Ray instance
    of our own, which dies with this process anyway, the detached PlacementGroupCleaner (which
    frees a run's placement group if its controller dies). tests/test_runner_select.py checks
    that these helpers, and only these, are left out, and tests/test_runner.py that a suite's
    run starts no TrainController actor."""
    from ray.train.torch import TorchTrainer

    if not enabled():  # the driver said so (say_which_path)
        return TorchTrainer

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


def actor_class_names() -> set[str]:
    """Class names of every actor of the connected cluster, dead ones too (for the tests that
    check which helpers a cell started; Ray's public state API needs the dashboard)."""
    from ray._private import state

    return {actor["ActorClassName"] for actor in state.actors().values()}
