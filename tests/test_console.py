"""What a suite run shows on the console: the progress renderers, and the real CLI's output."""
from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amod_bench.runner import ray_fast_path
from amod_bench.progress import SuiteProgress
from test_runner import ROOT, cells_of, write_suite

CELLS = {"stage-a": 1.0, "stage-b": 2.0}


def run_events(progress: SuiteProgress) -> None:
    progress.cell_started("stage-a")
    progress.cell_started("stage-b")
    progress.cell_evaluated("stage-a", {"epoch": 0.5, "val_top1": 40.0})
    progress.tick()
    progress.cell_evaluated("stage-a", {"epoch": 1.0, "val_top1": 55.5})
    progress.cell_ended("stage-a", "done")
    progress.cell_evaluated("stage-b", {"epoch": 2.0, "val_top1": 61.25})
    progress.cell_ended("stage-b", "failed")
    progress.close()


def test_piped_output_is_one_line_per_event(capsys):
    run_events(SuiteProgress(list(CELLS), CELLS, live=False))
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[0/2] started  stage-a",
        "[0/2] started  stage-b",
        lines[2],
        lines[3],
        "[1/2] done     stage-a  val top-1 55.50  in 0s",
        lines[5],
        "[2/2] failed   stage-b  val top-1 61.25  in 0s",
    ]
    # evaluations carry the suite's ETA: known once any epoch is done, 0 when all are
    assert lines[2].startswith("[0/2] stage-a: epoch 0.50/1  val top-1 40.00  suite ETA ")
    assert not lines[2].endswith("suite ETA -")
    assert lines[5] == "[1/2] stage-b: epoch 2.00/2  val top-1 61.25  suite ETA 0s"


def test_live_bars_end_with_the_suite_line_and_survive_pickling(capsys):
    progress = SuiteProgress(list(CELLS), CELLS, live=True)
    progress.cell_started("stage-a")
    copy = pickle.loads(pickle.dumps(progress))  # Tune pickles its callbacks, this object with them
    assert copy.cells["stage-a"].status == "running"
    run_events(progress)
    out = capsys.readouterr().out
    # the ended cells are printed once each, above the bars; the suite's bar is the last thing drawn
    assert out.count("done     stage-a  val top-1 55.50") == 1
    assert out.count("failed   stage-b  val top-1 61.25") == 1
    last = re.split(r"[\r\n]", out.rstrip())[-1]
    assert last.startswith("2/2 cells |") and "100%" in last
    assert "[0/2]" not in out  # no event lines in a terminal


def test_default_is_lines_when_stdout_is_not_a_terminal(capsys):
    assert SuiteProgress(list(CELLS), CELLS).live is False


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_successful_cli_run_prints_plan_events_and_summary_only(tmp_path):
    path = write_suite(tmp_path, "console", """\
        - name: main
          grid: {router: dense}
        """)
    results, (cell,) = cells_of(path)
    proc = subprocess.run([sys.executable, "bench.py", str(path), "--no-report", "--num-cpus", "2"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=240)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout
    fast_path_on = ray_fast_path.enabled()  # same Ray and environment as the run's driver
    assert not [line for line in lines if re.search("WARNING|Error|Traceback", line)], proc.stdout
    log_file = results.root / "logs" / "driver.log"
    expected = [rf"suite console: 1 cells, 1 to run, 0 skipped -> {re.escape(str(results.root))}",
                *([] if fast_path_on else [r"Ray [\d.]+: cells run on Ray's public API .*"]),
                r"running 1 cells, 1 at a time",
                rf"\[0/1\] started  {cell.id}",
                *[rf"\[0/1\] {cell.id}: epoch .*" for _ in range(3)],  # evaluations at 0, 0.5, 1 epoch
                rf"\[1/1\] done     {cell.id}  val top-1 [\d.]+  in \S+",
                r"finished in \d+s: 1 done",
                rf"Ray's messages: {re.escape(str(log_file))}"]
    assert len(lines) == len(expected), proc.stdout
    for pattern, line in zip(expected, lines):
        assert re.fullmatch(pattern, line), (pattern, line)
    # what Ray said is kept, in the file the summary names
    assert "Started a local Ray instance" in Path(log_file).read_text()
