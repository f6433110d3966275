"""The runner on a real Ray cluster: two simulated nodes on 127.0.0.1 (conftest.ray_cluster),
real TorchTrainers, real bundled data. Each test has a timeout: a worker group that cannot be
placed waits forever."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from amod_bench.results import ResultsFolder
from amod_bench.runner import ray_fast_path, run_suite
from amod_bench.suite import expand, load_suite

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("train_seconds", "eval_seconds")  # wall-clock, the only metrics allowed to differ between runs


def write_suite(folder: Path, name: str, stages: str, *, recipe: str = "",
                resources: str = "workers: 1, cpus_per_worker: 1, max_failures: 1",
                max_concurrent: int = 2) -> Path:
    """A suite of the smallest preset on bundled digits: 20 steps per epoch at batch 64."""
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        output: {folder / 'results' / name}
        max_concurrent: {max_concurrent}
        defaults:
          grid: {{model: vit_nano_patch7_28, dataset: "bundled:digits", seed: 0}}
          recipe: {{optimizer: adamw, lr: 0.003, epochs: 1, batch_size: 64,
                    warmup_epochs: 0, augment: {{hflip: false}}, {recipe or "eval_every: 0.5"}}}
          resources: {{{resources}}}
        stages:
        """) + textwrap.indent(textwrap.dedent(stages), "  "))
    return path


def cells_of(path: Path):
    suite = load_suite(path)
    return ResultsFolder(suite.output), expand(suite)


def test_two_node_ddp_cell_keeps_ranks_identical(ray_cluster, tmp_path):
    # Each node has 2 CPUs and each worker asks for 2, so the two DDP ranks sit on different nodes.
    # On the fast path the cell's TrainController runs in its trial's process (runner.ray_fast_path).
    path = write_suite(tmp_path, "ddp", """\
        - name: main
          grid: {router: amod, capacity: 0.5}
        """, resources="workers: 2, cpus_per_worker: 2, max_failures: 1")
    statuses = run_suite(path)
    results, (cell,) = cells_of(path)
    assert statuses == {cell.id: "done"}
    summary = results.cell(cell.id).read_summary()
    assert summary["hardware"]["workers"] == 2
    first, second = summary["rank_checksums"]
    assert first == second
    rows = results.cell(cell.id).read_metrics()
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert rows[-1]["samples"] == 20 * 64
    assert rows[-1]["train_macs"] == 20 * 64 * cell_config(results, cell.id)["train_macs_per_sample"]
    assert all(0 <= r["val_top1"] <= 100 for r in rows)
    # The cluster's actor table (every actor of the session, dead ones too): Ray Train's workers,
    # and on the fast path never a controller actor
    if ray_fast_path.enabled():
        classes = ray_fast_path.actor_class_names()
        assert "RayTrainWorker" in classes and "TrainController" not in classes


def cell_config(results: ResultsFolder, cell_id: str) -> dict:
    return json.loads(results.cell(cell_id).config.read_text())


def test_killed_worker_resumes_from_checkpoint_without_gaps(ray_cluster, tmp_path):
    marker = tmp_path / "killed"
    path = write_suite(tmp_path, "fault", """\
        - name: main
          grid: {router: mod, capacity: 0.5}
        """, recipe="eval_every: 0.25", resources="workers: 2, cpus_per_worker: 1, max_failures: 2")
    statuses = run_suite(path, worker_env={"AMOD_BENCH_TEST_KILL_AT_STEP": f"12:{marker}"})
    results, (cell,) = cells_of(path)
    assert marker.exists(), "the fault hook never fired"
    assert statuses[cell.id] == "done"
    steps = [r["step"] for r in results.cell(cell.id).read_metrics()]
    assert steps == [0, 5, 10, 15, 20]  # evals every 5 steps; the kill at 12 resumed from step 10


def test_diverging_cell_is_flagged_while_its_sibling_finishes(ray_cluster, tmp_path):
    path = write_suite(tmp_path, "diverge", """\
        - name: main
          grid: {router: dense, optimizer: sgd, lr: [0.01, 1.0e+12]}
        """)
    statuses = run_suite(path)
    results, cells = cells_of(path)
    by_lr = {c.config.recipe.lr: c.id for c in cells}
    assert statuses[by_lr[0.01]] == "done"
    assert statuses[by_lr[1e12]] == "diverged"
    diverged = results.cell(by_lr[1e12]).read_summary()
    assert diverged["diverged_at_step"] is not None
    index = json.loads((results.root / "index.json").read_text())
    assert {c["id"]: c["status"] for c in index["cells"]} == statuses


def test_init_from_an_earlier_stage_starts_from_its_checkpoint(ray_cluster, tmp_path):
    # With prestart and 2 cells at a time, a fine-tune cell's workers start beside the pretrain
    # and must wait for its final checkpoint, not load an earlier one or none. (Without prestart
    # the trial waits and resolves the same way before fitting: every other test's cells take
    # that path, with no dependency to wait for.)
    path = write_suite(tmp_path, "chain", """\
        - name: pretrain
          grid: {router: dense}
        - name: finetune
          init_from: pretrain
          grid: {router: [amod, mod_tanh], capacity: 1.0}
          recipe: {epochs: 0.5, eval_every: 0.5}
        """, resources="workers: 1, cpus_per_worker: 1, max_failures: 1, prestart: true")
    statuses = run_suite(path)
    results, cells = cells_of(path)
    assert set(statuses.values()) == {"done"}
    pretrain = next(c for c in cells if c.stage == "pretrain")
    pretrained_rows = results.cell(pretrain.id).read_metrics()
    for cell in cells:
        if cell.stage != "finetune":
            continue
        config = cell_config(results, cell.id)
        assert config["init_weights"].startswith(results.cell(pretrain.id).read_summary()["checkpoint"])
        # At capacity 1.0 A-MoD and zero-init mod_tanh are the dense model: their step-0 accuracy
        # is the pretrained model's final accuracy.
        start = results.cell(cell.id).read_metrics()[0]
        assert start["step"] == 0
        assert start["val_top1"] == pytest.approx(pretrained_rows[-1]["val_top1"])


def test_prestarted_cell_of_a_diverged_parent_fails_naming_it(ray_cluster, tmp_path):
    path = write_suite(tmp_path, "orphan", """\
        - name: pretrain
          grid: {router: dense, optimizer: sgd, lr: 1.0e+12}
        - name: finetune
          init_from: pretrain
          grid: {router: mod, capacity: 0.5}
        """, resources="workers: 1, cpus_per_worker: 1, max_failures: 0, prestart: true")
    statuses = run_suite(path)
    results, cells = cells_of(path)
    pretrain, finetune = sorted(cells, key=lambda c: c.stage != "pretrain")
    assert statuses == {pretrain.id: "diverged", finetune.id: "failed"}
    error = results.cell(finetune.id).read_summary()["error"]
    assert f"cannot start: {pretrain.id}" in error and "ended diverged" in error
    assert results.cell(finetune.id).read_metrics() == []


def _driver_until(path: Path, reached, *options: str) -> subprocess.Popen:
    """`bench.py run` in a process group of its own, returned (still running) once `reached()`."""
    proc = subprocess.Popen([sys.executable, "bench.py", "run", str(path), *options],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not reached():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_suite_reruns_only_unfinished_cells(ray_cluster, tmp_path, stop):
    path = write_suite(tmp_path, "resume", """\
        - name: main
          grid: {router: [dense, amod, mod], capacity: 0.5}
        """, max_concurrent=1)
    results, cells = cells_of(path)
    first = cells[0]
    proc = _driver_until(path, lambda: results.cell(first.id).status() == "done",
                         "--address", ray_cluster.address)
    os.killpg(proc.pid, stop)  # Ctrl-C, as a user would; or a scheduler's SIGTERM
    output, _ = proc.communicate(timeout=120)
    assert "Tuner.restore" not in output and "To resume, run the same command again" in output, output
    unfinished = [c.id for c in cells if results.cell(c.id).status() != "done"]
    assert unfinished, "interrupt came too late: every cell had finished"

    done_files = results.cell(first.id)
    before = (done_files.summary.stat().st_mtime_ns, done_files.metrics.stat().st_mtime_ns,
              len(done_files.read_metrics()))
    statuses = run_suite(path)
    assert statuses[first.id] == "skipped"
    assert all(statuses[cid] == "done" for cid in unfinished)
    after = (done_files.summary.stat().st_mtime_ns, done_files.metrics.stat().st_mtime_ns,
             len(done_files.read_metrics()))
    assert after == before
    for cid in unfinished:
        steps = [r["step"] for r in results.cell(cid).read_metrics()]
        assert steps == sorted(set(steps)) and steps[-1] == 20


def test_board_hands_each_cells_reports_to_its_trial_once_and_in_order(ray_cluster):
    import ray

    from amod_bench.runner.board import remote_board

    board = remote_board().remote({})
    try:
        waiting = board.take.remote("a", 30.0)  # a trial waiting before its cell's first report
        # one post at a time, as the controller posts (an async actor may run concurrent calls
        # out of order)
        for cell_id, step in (("a", 0), ("b", 0), ("a", 10)):
            ray.get(board.post.remote(cell_id, {"step": step}))
        first, first_closed = ray.get(waiting)
        rest, rest_closed = ray.get(board.take.remote("a", 0.0))
        assert first + rest == [{"step": 0}, {"step": 10}]  # posted order, nothing twice
        assert not first_closed and not rest_closed
        assert ray.get(board.take.remote("b", 0.0)) == ([{"step": 0}], False)
        tic = time.monotonic()
        assert ray.get(board.take.remote("a", 0.3)) == ([], False)  # nothing new: waits, then returns
        assert time.monotonic() - tic >= 0.3
        # a run that ends wakes its waiting trial at once, after its last report
        waiting = board.take.remote("a", 30.0)
        ray.get(board.post.remote("a", {"step": 20}))
        ray.get(board.close.remote("a"))
        tic = time.monotonic()
        taken = ray.get(waiting)
        if not taken[1]:  # the post woke the trial first; the close is the next take's answer
            taken = (taken[0] + ray.get(board.take.remote("a", 30.0))[0], True)
        assert taken == ([{"step": 20}], True) and time.monotonic() - tic < 10
        assert ray.get(board.take.remote("b", 0.0)) == ([], False)  # other cells stay open
    finally:
        ray.kill(board)


def test_board_tells_a_prestarted_cell_once_its_parent_trains_or_has_finished(ray_cluster):
    import ray

    from amod_bench.runner.board import remote_board

    board = remote_board().remote({"done-before": {"status": "done"}})
    try:
        assert ray.get(board.started_or_finished.remote("done-before", 0.0))
        assert not ray.get(board.started_or_finished.remote("parent", 0.2))  # waits, then says no
        waiting = board.started_or_finished.remote("parent", 30.0)
        ray.get(board.post.remote("parent", {"step": 0}))
        tic = time.monotonic()
        assert ray.get(waiting) and time.monotonic() - tic < 10  # woken by the first report
        ray.get(board.take.remote("parent", 0.0))  # its trial takes the report: still started
        assert ray.get(board.started_or_finished.remote("parent", 0.0))
        assert not ray.get(board.started_or_finished.remote("other", 0.0))
    finally:
        ray.kill(board)


def test_board_wakes_a_trial_waiting_on_dependencies_when_they_finish(ray_cluster):
    import ray

    from amod_bench.runner.board import remote_board

    board = remote_board().remote({"done-before": {"status": "done"}})
    try:
        assert ray.get(board.get.remote(["done-before", "x"], 0.2)) == {"done-before": {"status": "done"},
                                                                        "x": None}
        waiting = board.get.remote(["done-before", "x", "y"], 30.0)
        ray.get(board.finish.remote("x", {"status": "done"}))
        ray.get(board.finish.remote("y", {"status": "failed"}))
        tic = time.monotonic()
        assert ray.get(waiting) == {"done-before": {"status": "done"}, "x": {"status": "done"},
                                    "y": {"status": "failed"}}
        assert time.monotonic() - tic < 10  # woken by the finish, not by the 30 s timeout
    finally:
        ray.kill(board)


def _listening_sockets(root_pid: int) -> list[tuple[str, str, int]]:
    """(command line, address, port) of every listening TCP socket of a process and its descendants."""
    import psutil

    root = psutil.Process(root_pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            command, connections = " ".join(proc.cmdline()), proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):  # ended since the listing
            continue
        found += [(command, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def test_local_instance_listens_on_loopback_only_while_a_ddp_cell_trains(tmp_path):
    # bench.py's own local instance (no --address): Ray's servers, its workers, and the DDP
    # rendezvous store rank 0 hosts (torch's TCPStore, unauthenticated) for two ranks
    path = write_suite(tmp_path, "sockets", """\
        - name: main
          grid: {router: dense}
          recipe: {epochs: 2, eval_every: 0.5}
        """, resources="workers: 2, cpus_per_worker: 1, max_failures: 0")
    results, (cell,) = cells_of(path)
    files = results.cell(cell.id)
    proc = _driver_until(path, lambda: files.read_metrics(), "--num-cpus", "2", "--no-report")
    try:  # the step-0 evaluation is written: both ranks have joined the process group and train
        sockets = _listening_sockets(proc.pid)
    finally:
        output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert [s for s in sockets if "RayTrainWorker" in s[0]], sockets  # the store was seen
    exposed = [s for s in sockets if not _is_loopback(s[1])]
    assert not exposed, exposed


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # ::ffff:127.0.0.1 is 127.0.0.1
