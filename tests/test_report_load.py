"""Loading results folders: tidy frames, flags instead of silent drops, corrupt lines warn."""
import json

import numpy as np
import pytest

from amod_bench.report.groups import add_variant_columns, variant_axes
from amod_bench.report.load import ReportWarning, ResultsNotFound, load_results
from fixtures_report import DENSE_KNOTS, Cell, known_suite, write_suite


def test_frames_have_one_row_per_cell_and_per_eval(tmp_path):
    res = load_results(known_suite(tmp_path))
    assert len(res.cells) == 15 and res.cells["ok"].all()
    assert len(res.evals) == 15 * 10
    assert res.evals.groupby(["suite", "cell"]).size().eq(10).all()
    assert {"epoch", "step", "train_macs", "train_seconds", "eval_seconds", "val_top1"} <= set(res.evals.columns)
    assert res.evals["grad_norm"].iloc[0] == 1.0  # a numeric key outside the contract is kept, not dropped
    dense = res.cells[res.cells["router"] == "dense"].iloc[0]
    assert dense["best_top1"] == 80.0 and dense["target_within_peak_pct"] == 2.0
    assert dense["gmacs"] == 1.25 and np.isnan(dense["capacity"])
    assert "resources" not in res.cells  # scheduling only
    assert json.loads(res.cells.loc[res.cells["router"] == "amod", "routed_layers"].iloc[0]) == [1, 3, 5, 7, 9, 11]


def test_unfinished_failed_diverged_and_missing_cells_are_kept_and_flagged(tmp_path):
    cells = [Cell("dense", None, s, DENSE_KNOTS) for s in range(2)] + [
        Cell("amod", 0.5, 0, DENSE_KNOTS, status="failed"),
        Cell("amod", 0.5, 1, DENSE_KNOTS, status="diverged"),
        Cell("amod", 0.5, 2, DENSE_KNOTS, status="running"),
        Cell("amod", 0.5, 3, DENSE_KNOTS, status=None),  # killed before any summary
    ]
    root = write_suite(tmp_path, "flags", cells)
    index = json.loads((root / "index.json").read_text())
    index["cells"].append({"id": "never-started", "stage": "finetune", "status": "pending"})
    (root / "index.json").write_text(json.dumps(index))

    res = load_results(root)
    flags = dict(zip(res.cells["cell"], res.cells["flag"]))
    assert flags[cells[2].id] == "failed" and flags[cells[3].id] == "diverged"
    assert flags[cells[4].id] == "unfinished" and flags[cells[5].id] == "unfinished"
    assert flags["never-started"] == "missing"
    assert res.cells["ok"].sum() == 2 and len(res.flagged) == 5
    reasons = dict(zip(res.cells["cell"], res.cells["reason"]))
    assert "CUDA out of memory" in reasons[cells[2].id]
    assert "no summary.json" in reasons[cells[5].id]
    # diverged evals are read as NaN, not dropped
    div = res.evals[res.evals["cell"] == cells[3].id]
    assert len(div) == 10 and div["val_top1"].isna().sum() == 5


def test_cells_left_by_an_earlier_version_of_the_suite_are_flagged_stale(tmp_path):
    """A suite edited and rerun gets new cell ids; the old cells stay on disk but out of every statistic."""
    root = write_suite(tmp_path, "toy", [Cell("dense", None, s, DENSE_KNOTS) for s in range(2)])
    write_suite(tmp_path / "old", "toy", [Cell("dense", None, 0, DENSE_KNOTS, cell_id="dense-s0-oldhash")])
    (tmp_path / "old" / "toy" / "cells" / "dense-s0-oldhash").rename(root / "cells" / "dense-s0-oldhash")
    cells = load_results(root).cells.set_index("cell")
    assert cells["ok"].sum() == 2
    assert cells.loc["dense-s0-oldhash", "flag"] == "stale"
    assert "not in index.json" in cells.loc["dense-s0-oldhash", "reason"]


def test_truncated_metrics_line_warns_with_file_and_line(tmp_path):
    cell = Cell("dense", None, 0, DENSE_KNOTS, metrics_tail='{"step": 1100, "epoch": 11.0, "val_to')
    root = write_suite(tmp_path, "trunc", [cell])
    with pytest.warns(ReportWarning, match=r"metrics\.jsonl:11: corrupt or truncated"):
        res = load_results(root)
    assert res.cells.loc[0, "ok"] and res.cells.loc[0, "bad_lines"] == 1
    assert len(res.evals) == 10
    assert any("metrics.jsonl:11" in w for w in res.warnings)


def test_unreadable_config_flags_the_cell(tmp_path):
    root = write_suite(tmp_path, "badcfg", [Cell("dense", None, 0, DENSE_KNOTS)])
    cfg = next((root / "cells").iterdir()) / "config.json"
    cfg.write_text("{not json")
    with pytest.warns(ReportWarning, match="config.json: unreadable JSON"):
        res = load_results(root)
    assert res.cells.loc[0, "flag"] == "no_config"


def test_several_suites_combine_and_keep_their_names(tmp_path):
    a = known_suite(tmp_path / "a", name="alpha", seeds=(0,))
    b = known_suite(tmp_path / "b", name="beta", seeds=(1, 2))
    res = load_results([a, b])
    assert sorted(res.cells["suite"].unique()) == ["alpha", "beta"]
    assert len(res.cells) == 15
    cells, router_axes, recipe_axes = add_variant_columns(res.cells)
    assert router_axes == [] and recipe_axes == []  # seeds from both suites pool into one variant each
    assert cells.groupby("variant").size().eq(3).all()


def test_same_suite_name_twice_falls_back_to_the_path(tmp_path):
    a = known_suite(tmp_path / "a", name="same", seeds=(0,))
    b = known_suite(tmp_path / "b", name="same", seeds=(1,))
    res = load_results([a, b])
    assert set(res.cells["suite"]) == {"same", str(b)}


def test_missing_folder_raises_a_clear_error(tmp_path):
    with pytest.raises(ResultsNotFound, match="results folder not found"):
        load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsNotFound, match="not a results folder"):
        load_results(tmp_path / "empty")


def test_variant_axes_are_declared_axes_that_differ_at_equal_seed(tmp_path):
    axes = ["model", "dataset", "router", "capacity", "routed_layers", "cls_policy", "lr", "data_seed", "seed"]
    cells = []
    for s in (0, 1):
        for lr in (1e-4, 1e-3):
            for policy in ("compete", "keep"):
                # `note` differs with lr at equal seed, but it is no grid axis: it never splits variants
                cells.append(Cell("amod", 0.5, s, DENSE_KNOTS, extra={"lr": lr, "cls_policy": policy,
                                                                       "data_seed": 100 + s, "note": f"lr {lr}",
                                                                       "axes": axes}))
        cells.append(Cell("dense", None, s, DENSE_KNOTS, extra={"data_seed": 100 + s, "axes": axes}))
    res = load_results(write_suite(tmp_path, "axes", cells))
    # routed_layers differs only between routers, data_seed and init_from only between seeds
    assert variant_axes(res.cells) == ["cls_policy", "lr"]
    frame, router_axes, recipe_axes = add_variant_columns(res.cells)
    assert router_axes == ["cls_policy"] and recipe_axes == ["lr"]
    assert "amod (cls_policy=keep)" in set(frame["router_label"])
    assert frame.loc[frame["router"] == "dense", "router_label"].eq("dense").all()
    assert frame.loc[frame["router"] == "dense", "capacity"].eq(1.0).all()
    assert frame.groupby("variant").size().eq(2).all()  # 4 amod variants + dense, two seeds each


def test_cells_without_axes_are_grouped_by_router_and_capacity_and_say_so(tmp_path):
    cells = [Cell("amod", 0.5, s, DENSE_KNOTS, extra={"lr": lr}) for s in (0, 1) for lr in (1e-4, 1e-3)]
    folder = write_suite(tmp_path, "old", cells)
    for config_file in (folder / "cells").glob("*/config.json"):
        config = json.loads(config_file.read_text())
        del config["axes"]
        config_file.write_text(json.dumps(config))
    with pytest.warns(ReportWarning, match=r"4 cell\(s\) have no `axes`"):
        res = load_results(folder)
    assert variant_axes(res.cells) == []


def test_a_searched_lr_is_an_axis_of_the_search_stage_only(tmp_path):
    """In a stage that takes each arm's lr from a search (select), the arms ran at different lrs:
    the lr is part of the arm there, so A-MoD and MoD are still compared."""
    search_axes = ["model", "dataset", "router", "capacity", "routed_layers", "cls_policy", "lr", "seed"]
    main_axes = [a for a in search_axes if a != "lr"]
    cells = [Cell(r, 0.5, 0, DENSE_KNOTS, stage="search", extra={"lr": lr, "axes": search_axes})
             for r in ("amod", "mod") for lr in (1e-4, 1e-3)]
    cells += [Cell(r, 0.5, s, DENSE_KNOTS, stage="main", extra={"lr": lr, "axes": main_axes})
              for r, lr in (("amod", 1e-3), ("mod", 1e-4)) for s in (0, 1)]
    res = load_results(write_suite(tmp_path, "select", cells))
    frame, _, recipe_axes = add_variant_columns(res.cells)
    assert recipe_axes == ["lr"]
    assert set(frame.loc[frame["stage"] == "search", "recipe"]) == {"lr=0.0001", "lr=0.001"}
    assert set(frame.loc[frame["stage"] == "main", "recipe"]) == {""}  # one recipe: the arms compare


def test_skipped_samples_reach_the_cells_table_and_the_index(tmp_path):
    from amod_bench.report.build import ReportOptions, build_report

    root = known_suite(tmp_path)
    res = load_results(root)
    skipping = res.cells["cell"].iloc[0]
    summary_path = root / "cells" / skipping / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "train_skipped": 7, "val_skipped": 2}))
    out = tmp_path / "report"
    build_report([root], out, ReportOptions(n_boot=50, figures=False, routing_maps=False), log=lambda m: None)
    table = (out / "tables" / "cells.csv").read_text().splitlines()
    header = table[0].split(",")
    row = next(line for line in table if line.startswith(f"known,{skipping},")).split(",")
    assert (row[header.index("train_skipped")], row[header.index("val_skipped")]) == ("7.0", "2.0")
    index = (out / "index.md").read_text()
    assert f"Skipped samples: 1 cells" in index and f"`{skipping}` (7 train_skipped, 2 val_skipped)" in index


def test_ray_startup_per_cell_reaches_the_index_as_a_median(tmp_path):
    from amod_bench.report.build import ReportOptions, build_report

    root = known_suite(tmp_path)
    cells = load_results(root).cells["cell"].tolist()
    for seconds, cell in zip((4.0, 10.0, 30.0) * len(cells), cells):
        summary_path = root / "cells" / cell / "summary.json"
        summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "startup_seconds": seconds}))
    out = tmp_path / "report"
    build_report([root], out, ReportOptions(n_boot=50, figures=False, routing_maps=False), log=lambda m: None)
    index = (out / "index.md").read_text()
    finished = load_results(root).cells
    expected = float(np.median(finished.loc[finished["ok"], "startup_seconds"]))
    assert f"Ray start-up per cell, median over finished cells" in index
    assert f"known: {expected:.1f} s (n = {int(finished['ok'].sum())};" in index
