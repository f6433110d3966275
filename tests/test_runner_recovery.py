"""Recovery on a real Ray cluster (conftest.ray_cluster): a rerun after the driver was killed, or
after a summary was lost, restores every evaluation row from the checkpoints, and a resumed curve
equals an uninterrupted one because a cell is deterministic. CI runs these once, on the newest Ray
of the range; tests/test_runner.py's run on both ends of it."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from amod_bench.runner import run_suite
from test_runner import TIMINGS, _driver_until, cell_config, cells_of, write_suite

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


KILLED_STAGES = """\
    - name: main
      grid: {router: random, capacity: 0.5}
      recipe: {epochs: 6, eval_every: 0.5}
    """


@pytest.fixture(scope="module")
def uninterrupted_rows(ray_cluster, tmp_path_factory) -> list[dict]:
    """The killed tests' cell run once without interruption: its rows, less the timings."""
    reference = write_suite(tmp_path_factory.mktemp("reference"), "killed", KILLED_STAGES)
    run_suite(reference)
    results, (cell,) = cells_of(reference)
    rows = _without_timings(results.cell(cell.id).read_metrics())
    assert [r["step"] for r in rows] == list(range(0, 121, 10))
    return rows


def _kill_the_machine(proc) -> None:
    """SIGKILL to the driver and every process of its local Ray instance at once, as a power cut."""
    import psutil

    root = psutil.Process(proc.pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.parametrize("killed", ["driver", "machine"])
def test_killed_run_reruns_with_every_row_from_the_checkpoint(ray_cluster, tmp_path, uninterrupted_rows, killed):
    # "driver": bench.py on the test's cluster, which lives on (its worker may checkpoint once more);
    # "machine": bench.py with a Ray instance of its own, every process killed at once.
    # A random router draws from torch's RNG, so an identical resumed curve also needs the RNG
    # state restored from the checkpoint. Evals every 10 steps over 6 epochs: 13 rows.
    path = write_suite(tmp_path, "killed", KILLED_STAGES)
    results, (cell,) = cells_of(path)
    files = results.cell(cell.id)
    options = ("--address", ray_cluster.address) if killed == "driver" else ("--num-cpus", "2")
    proc = _driver_until(path, lambda: len(files.read_metrics()) >= 5, *options)
    if killed == "driver":
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, with no cleanup
    else:
        _kill_the_machine(proc)
    proc.wait(timeout=60)
    kept = files.read_metrics()
    assert 5 <= len(kept) < len(uninterrupted_rows), "the kill came too late: the cell had finished"
    # rows that never reached the driver (it died between the worker's checkpoint and its report)
    files.write_metrics(kept[:2])

    statuses = run_suite(path)
    assert statuses[cell.id] == "done"
    assert _without_timings(files.read_metrics()) == uninterrupted_rows  # every row once, as uninterrupted
    summary = files.read_summary()
    assert summary["steps"] == 120 and summary["checkpoint"]
    kept_checkpoints = [f for f in Path(summary["checkpoint"]).parent.glob("checkpoint_*") if f.is_dir()]
    assert kept_checkpoints == [Path(summary["checkpoint"])]  # checkpoints_to_keep: 1, nothing stale


def test_lost_summary_of_a_parent_is_rebuilt_from_its_checkpoint(ray_cluster, tmp_path):
    path = write_suite(tmp_path, "lost", """\
        - name: pre
          grid: {router: dense}
        - name: ft
          init_from: pre
          grid: {router: amod, capacity: 0.5}
          recipe: {epochs: 0.5, eval_every: 0.5}
        """)
    run_suite(path)
    results, cells = cells_of(path)
    pre = next(c for c in cells if c.stage == "pre")
    files = results.cell(pre.id)
    summary, rows = files.read_summary(), files.read_metrics()
    files.summary.unlink()
    files.write_metrics(rows[:1])  # and most of its rows
    ft = next(c for c in cells if c.stage == "ft")
    results.remove_cell(ft.id)  # a dependent cell still to run

    statuses = run_suite(path)
    assert statuses == {pre.id: "done", ft.id: "done"}
    rebuilt = files.read_summary()
    assert rebuilt["checkpoint"] == summary["checkpoint"]
    assert rebuilt["best_top1"] == summary["best_top1"] and rebuilt["steps"] == summary["steps"]
    assert _without_timings(files.read_metrics()) == _without_timings(rows)
    assert cell_config(results, ft.id)["init_weights"].startswith(summary["checkpoint"])


def test_same_cell_twice_gives_identical_metrics(ray_cluster, tmp_path):
    stages = """\
        - name: main
          grid: {router: random, capacity: 0.5}
        """
    histories = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        path = write_suite(folder, "determinism", stages)
        run_suite(path)
        results, (cell,) = cells_of(path)
        histories.append(_without_timings(results.cell(cell.id).read_metrics()))
    assert histories[0] == histories[1]
    assert len(histories[0]) == 3
