"""The runner's decisions that need no Ray cluster: the searched value, the cells to run, how many
at once, which of Ray Train's helper actors a cell's trainer starts, and that summaries stay plain data."""
from __future__ import annotations

import pytest

from types import SimpleNamespace

from amod_bench.runner.inputs import dependencies, select_value
from amod_bench.runner.planning import RunError, choose_cells, concurrency, launch_order
from amod_bench.results import ResultsFolder
from amod_bench.suite import Cell, Recipe, Resources, SearchChoice
from cell_configs import cell

SELECT = SearchChoice(stage="search", param="lr", by=("router",), metric="best_top1",
                      cells=("a1", "a2", "b1", "b2", "c1"), values=(1e-5, 1e-5, 1e-4, 1e-4, 1e-3))


def summary(status: str, top1: float | None) -> dict:
    return {"status": status, "best_top1": top1}


def test_select_takes_the_best_mean_over_seeds_of_finished_cells():
    summaries = {"a1": summary("done", 80.0), "a2": summary("done", 70.0),   # mean 75
                 "b1": summary("done", 77.0), "b2": summary("done", 76.0),   # mean 76.5
                 "c1": summary("diverged", None)}                            # ignored
    assert select_value(SELECT, summaries) == 1e-4


def test_select_without_any_finished_search_cell_fails_clearly():
    summaries = {cid: summary("failed", None) for cid in SELECT.cells}
    with pytest.raises(RuntimeError, match="nothing to select"):
        select_value(SELECT, summaries)


def test_dependencies_and_filter_refuse_a_cell_whose_parent_is_neither_done_nor_selected(tmp_path):
    parent = cell("pretrain-x", "pretrain")
    child = cell("finetune-x", "finetune", init_from="pretrain-x")
    assert dependencies(child.config) == ["pretrain-x"]
    results = ResultsFolder(tmp_path)
    with pytest.raises(RunError, match="needs pretrain-x"):
        choose_cells([parent, child], results, cell_filter=["finetune"], fresh=False, retry_failed=False)
    to_run, skipped = choose_cells([parent, child], results, cell_filter=[], fresh=False, retry_failed=False)
    assert [c.id for c in to_run] == ["pretrain-x", "finetune-x"] and not skipped


def test_launch_order_keeps_stages_in_order_and_starts_the_costliest_cells_of_each_first():
    costs = {}

    def costly(name: str, stage: str, macs: int, epochs: float = 5) -> Cell:
        costs[name] = SimpleNamespace(train_macs_per_sample=macs)
        return cell(name, stage, recipe=Recipe(epochs=epochs))

    cells = [costly("pre", "pretrain", 10), costly("cheap", "finetune", 5), costly("dense-a", "finetune", 20),
             costly("dense-b", "finetune", 20), costly("mid", "finetune", 12),
             costly("long", "finetune", 5, epochs=40), costly("last", "eval", 100)]
    # a later stage never jumps ahead (its cells would wait on earlier ones in a slot); equal
    # costs keep the plan's order; epochs count, not only the MACs per sample
    assert [c.id for c in launch_order(cells, costs)] == ["pre", "long", "dense-a", "dense-b", "mid", "cheap", "last"]


def _cell(name: str, workers: int, cpus: float, gpus: float = 0) -> Cell:
    return cell(name, "s", resources=Resources(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus))


def test_concurrency_counts_the_smallest_cell_so_a_big_pretrain_does_not_serialise_the_rest():
    cells = [_cell("pretrain", 2, 1)] + [_cell(f"ft{i}", 1, 1) for i in range(6)]
    assert concurrency(cells, {"CPU": 2}, suite_cap=4, cli_cap=None) == 2  # two 1-CPU cells fit
    assert concurrency(cells, {"CPU": 8}, suite_cap=4, cli_cap=None) == 4  # the suite's cap
    assert concurrency(cells, {"CPU": 8}, suite_cap=4, cli_cap=1) == 1     # --max-concurrent wins
    assert concurrency(cells[:2], {"CPU": 8}, suite_cap=4, cli_cap=None) == 2  # never above the cell count
    gpu_cells = [_cell(f"g{i}", 2, 4, 1) for i in range(5)]
    assert concurrency(gpu_cells, {"CPU": 64, "GPU": 4}, suite_cap=8, cli_cap=None) == 2


def test_concurrency_refuses_a_cell_the_cluster_can_never_hold():
    with pytest.raises(RunError, match="needs 4 CPUs and 0 GPUs; the cluster has 2 CPUs"):
        concurrency([_cell("big", 4, 1)], {"CPU": 2}, suite_cap=2, cli_cap=None)


def _trivial_loop(config):
    pass


@pytest.mark.parametrize("own_instance", [True, False])
def test_cell_trainer_leaves_out_only_the_helper_actors_a_cell_never_uses(own_instance):
    """Fast path: DatasetManager always (no Ray Data), PlacementGroupCleaner only on our own
    instance; every other default callback (backend set-up, working directory, metrics, ...)
    stays. Any other Ray version, or AMOD_BENCH_RAY_PUBLIC=1: Ray's own TorchTrainer."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from amod_bench.runner import ray_fast_path

    trainer_class = ray_fast_path.trainer_class(own_instance)
    if not ray_fast_path.enabled():
        assert trainer_class is TorchTrainer
        return

    def callback_names(trainer_class):
        trainer = trainer_class(_trivial_loop, scaling_config=ray.train.ScalingConfig(num_workers=1))
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]

    default, lean = callback_names(TorchTrainer), callback_names(trainer_class)
    left_out = {"DatasetsCallback", "PlacementGroupCleanerCallback"} if own_instance else {"DatasetsCallback"}
    assert left_out <= set(default)
    assert lean == [name for name in default if name not in left_out]


def test_the_fast_path_is_on_only_for_tested_ray_versions(monkeypatch, capsys):
    import ray
    from ray.train.torch import TorchTrainer

    from amod_bench.runner import ray_fast_path

    assert ray_fast_path.enabled() == (ray.__version__ in ray_fast_path.TESTED_RAY_VERSIONS)
    monkeypatch.setenv(ray_fast_path.PUBLIC_ENV, "1")
    monkeypatch.setattr(ray_fast_path, "_said", False)
    assert not ray_fast_path.enabled() and ray_fast_path.env(local=True) == {}
    assert ray_fast_path.trainer_class(own_instance=True) is TorchTrainer
    ray_fast_path.say_which_path()
    ray_fast_path.say_which_path()
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and said[0].startswith(f"Ray {ray.__version__}: cells run on Ray's public API")


def test_provenance_is_plain_data_so_the_board_never_imports_torch():
    # every summary, provenance included, is unpickled by the board actor: a class in it
    # (torch.__version__ is torch's own str subclass) makes that process import its module
    import pickle
    import pickletools

    from amod_bench.provenance import software

    provenance = software()
    classes = [op.name for op, _, _ in pickletools.genops(pickle.dumps(provenance))
               if op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "REDUCE")]
    assert classes == [] and set(provenance["versions"]) == {"torch", "timm", "ray", "python"}
