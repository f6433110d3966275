"""A full disk under a real suite run (bench.py with its own local Ray instance): a small tmpfs
holds the results folder, or the checkpoints' storage. Mounting one needs root, as CI runs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_runner import ROOT, cells_of, write_suite

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420),
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")]


@pytest.fixture
def small_disk(tmp_path):
    """A factory of tmpfs mounts of a given size under tmp_path, unmounted afterwards."""
    mounts = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(disk: Path) -> None:
    """Write to `disk` until it is full."""
    filler = open(disk / "filler", "wb", buffering=0)
    try:
        while True:
            filler.write(b"\0" * 65536)
    except OSError:
        pass
    try:
        filler.close()
    except OSError:
        pass


def bench(*args: str) -> list[str]:
    return [sys.executable, "bench.py", "run", *args, "--num-cpus", "2"]


def test_results_disk_full_mid_run_stops_cleanly_and_a_rerun_finishes(tmp_path, small_disk):
    disk = small_disk("results_disk", "4m")
    suite = write_suite(tmp_path, "full", """\
        - name: main
          grid: {router: [dense, mod], capacity: 0.5}
          recipe: {epochs: 3}
        """, max_concurrent=1)
    text = suite.read_text().replace(f"output: {tmp_path / 'results' / 'full'}",
                                     f"output: {disk / 'full'}\nstorage: {tmp_path / 'ray'}")
    suite.write_text(text)
    results, cells = cells_of(suite)
    files = {c.id: results.cell(c.id) for c in cells}

    def one_done_one_training():
        statuses = {cid: f.status() for cid, f in files.items()}
        return "done" in statuses.values() and any(
            status == "running" and len(files[cid].read_metrics()) >= 2 for cid, status in statuses.items())

    proc = subprocess.Popen(bench(str(suite)), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not one_done_one_training():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    done = next(cid for cid, f in files.items() if f.status() == "done")
    training = next(cid for cid in files if cid != done)
    before = {p: p.read_bytes() for p in files[done].folder.iterdir()}
    fill(disk)
    output, _ = proc.communicate(timeout=300)

    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"error: cannot write {files[training].folder}/") and \
        "No space left on device" in errors[0] and "--retry-failed" in errors[0], errors
    assert {p: p.read_bytes() for p in files[done].folder.iterdir()} == before  # intact
    summary = files[training].read_summary()  # written in the room the run had set aside
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert str(files[training].folder) in summary["error"]
    rows = files[training].read_metrics()
    assert len(rows) >= 2 and [r["step"] for r in rows] == sorted({r["step"] for r in rows})

    (disk / "filler").unlink()
    rerun = subprocess.run(bench(str(suite), "--retry-failed", "--no-report"), cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert rerun.returncode == 0, rerun.stdout
    assert {p: p.read_bytes() for p in files[done].folder.iterdir()} == before
    steps = [r["step"] for r in files[training].read_metrics()]
    assert steps == list(range(0, 61, 10))  # every evaluation, each once
    assert not (results.root / ".reserve").exists()


def test_full_checkpoint_storage_fails_each_cell_naming_it_and_the_suite_reports(tmp_path, small_disk):
    storage = small_disk("storage_disk", "256k")  # less than one checkpoint of the nano model
    suite = write_suite(tmp_path, "nostorage", """\
        - name: main
          grid: {router: [dense, mod], capacity: 0.5}
        """, resources="workers: 1, cpus_per_worker: 1, max_failures: 0")
    suite.write_text(suite.read_text().replace("max_concurrent: 2\n", f"max_concurrent: 2\nstorage: {storage}\n"))
    results, cells = cells_of(suite)
    proc = subprocess.run(bench(str(suite)), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 1, proc.stdout  # cells failed; the run itself ended cleanly
    assert "Traceback" not in proc.stdout, proc.stdout
    for cell in cells:  # both ran: one cell's failure did not stop the other
        summary = results.cell(cell.id).read_summary()
        assert summary["status"] == "failed", summary
        assert f"cannot write the checkpoint of step 10 to the suite's storage {storage}" in summary["error"]
        assert "No space left on device" in summary["error"]
        assert f"failed: {cell.id} " in proc.stdout
    assert json.loads((results.root / "index.json").read_text())["cells"][0]["status"] == "failed"
    assert (results.root / "report" / "index.md").exists() and "report: " in proc.stdout


def test_read_only_output_is_one_error_naming_the_file_for_run_and_report(tmp_path):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(read_only)], check=True)
    try:
        suite = write_suite(tmp_path, "ro", """\
            - name: main
              grid: {router: dense}
            """)
        suite.write_text(suite.read_text().replace(f"output: {tmp_path / 'results' / 'ro'}",
                                                   f"output: {read_only / 'ro'}"))
        run = subprocess.run(bench(str(suite)), cwd=ROOT, text=True, capture_output=True, timeout=120)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.strip() == f"error: cannot write {read_only / 'ro' / 'suite.yaml'}: Read-only file system"
        report = subprocess.run([sys.executable, "bench.py", "report", str(ROOT / "results" / "quickstart"),
                                 "--out", str(read_only / "report"), "--no-figures"],
                                cwd=ROOT, text=True, capture_output=True, timeout=300)
        assert report.returncode == 2 and "Traceback" not in report.stderr, report.stderr
        assert re.fullmatch(rf"error: cannot write {re.escape(str(read_only))}/report/\S+: Read-only file system",
                            report.stderr.strip()), report.stderr
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)
