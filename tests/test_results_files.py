"""Damaged result files (issue 20, item 2): each is named with its path, none ever passes for a
done cell, and choosing the cells to run does not stop on one. No Ray: ResultsFolder and
choose_cells only."""
from __future__ import annotations

import pytest

from amod_bench.results import ResultsFolder
from amod_bench.runner.planning import RunError, choose_cells
from cell_configs import cell

DAMAGED_SUMMARIES = [
    ("truncated JSON", b'{"status": "done", "best_top1": 91.'),
    ("not UTF-8", b'{"status": "done", "error": "\xff"}'),
    ("not an object", b'["done"]'),
    ("no status", b'{"best_top1": 91.0}'),
]


@pytest.fixture
def results(tmp_path):
    folder = ResultsFolder(tmp_path / "results")
    folder.cell("pre-a").write_summary({"status": "done", "checkpoint": "/ckpt"})
    folder.cell("pre-a").write_metrics([{"step": 0, "val_top1": 10.0}])
    return folder


@pytest.mark.parametrize("data", [c[1] for c in DAMAGED_SUMMARIES], ids=[c[0] for c in DAMAGED_SUMMARIES])
def test_a_damaged_summary_is_named_and_its_cell_runs_again(results, capsys, data):
    damaged = results.cell("pre-b")
    damaged.write_config({"id": "pre-b"})
    damaged.summary.write_bytes(data)
    to_run, skipped = choose_cells([cell("pre-a"), cell("pre-b")], results, cell_filter=[], fresh=False,
                                   retry_failed=False)
    assert [c.id for c in to_run] == ["pre-b"] and skipped == {"pre-a": "done"}
    warning = capsys.readouterr().err
    assert f"{damaged.summary}: " in warning and "counts as not done and runs again" in warning
    assert damaged.status() == "unreadable" and damaged.read_summary() is None
    results.write_index("s", [("pre-a", "pre"), ("pre-b", "pre")])  # the run rewrites the index first
    assert '"status": "unreadable"' in (results.root / "index.json").read_text()


def test_a_summary_that_is_a_folder_is_named(results):
    damaged = results.cell("pre-b")
    damaged.summary.mkdir(parents=True)
    assert damaged.status() == "unreadable"
    (problem,) = damaged.problems()
    assert problem.startswith(f"{damaged.summary}: cannot read it")


def test_a_dependency_with_a_damaged_summary_is_not_done(results):
    results.cell("pre-a").summary.write_text("{")
    with pytest.raises(RunError, match=r"needs pre-a, .*its status: unreadable"):
        choose_cells([cell("pre-a"), cell("ft-a", init_from="pre-a")], results, cell_filter=["ft-"],
                     fresh=False, retry_failed=False)


def test_damaged_metrics_and_config_are_named_with_their_lines(results, capsys):
    files = results.cell("pre-a")
    files.metrics.write_text('{"step": 0, "val_top1": 10.0}\n{"step": 10, "val_\n[1]\n{"step": 20}\n')
    files.config.write_text("{,}")
    assert [row["step"] for row in files.read_metrics()] == [0, 20]
    assert files.status() == "done"  # the summary is intact: the cell stays done
    choose_cells([cell("pre-a")], results, cell_filter=[], fresh=False, retry_failed=False)
    warning = capsys.readouterr().err
    assert f"warning: {files.metrics}: line 2, 3 not an evaluation row" in warning
    assert f"warning: {files.config}: not JSON" in warning
