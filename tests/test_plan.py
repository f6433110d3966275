"""`bench.py plan`: the JSON rows agree with amod_bench.flops, the table has a totals line,
an invalid suite exits 2, and missing data only warns."""
from __future__ import annotations

import json
import textwrap

import pytest

from amod_bench.cli import main as cli_main

MODEL = "vit_nano_patch7_28"

SUITE = f"""\
name: plan-fixture
defaults:
  grid:
    model: {MODEL}
    dataset: bundled:digits
  recipe: {{epochs: 1, batch_size: 32}}
stages:
  - name: search
    grid:
      router: [dense, amod]
      capacity: 0.5
      lr: [1e-3, 1e-2]
    recipe: {{eval_split: heldout}}
  - name: main
    grid:
      router: [dense, isoflop, amod, mod]
      capacity: [0.25, 0.5]
      seed: [0, 1]
    select: {{stage: search, by: [model, dataset]}}
"""


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return str(path)


def run_plan(capsys, *argv):
    code = cli_main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_rows_match_flops(suite_file, capsys):
    from amod_bench import flops

    code, out, err = run_plan(capsys, suite_file, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 * 2 + 2 * (1 + 2 + 2 + 2)
    for row in rows:
        assert {"id", "stage", "model", "router", "capacity", "dataset", "seed", "params", "gmacs",
                "flop_ratio"} <= set(row)
        arch = dict(router=row["router"], capacity=row["capacity"], routed_layers=row["routed_layers"],
                    cls_policy=row["cls_policy"], num_classes=10)
        assert row["gmacs"] == pytest.approx(flops.count_macs(MODEL, **arch).total / 1e9)
        assert row["flop_ratio"] == pytest.approx(flops.flop_ratio(MODEL, **arch))
        assert row["params"] > 0 and row["num_classes"] == 10 and row["img_size"] == 28
    dense = [r for r in rows if r["router"] == "dense"]
    assert dense and all(r["flop_ratio"] == 1.0 for r in dense)
    routed = [r for r in rows if r["router"] in ("amod", "mod")]
    assert all(r["flop_ratio"] < 1.0 for r in routed)
    main = [r for r in rows if r["stage"] == "main"]
    assert all(r["lr"] is None and r["select"] == {"stage": "search", "param": "lr"} for r in main)


def test_params_are_the_built_models(suite_file, capsys):
    from amod_bench.models import build_model

    _, out, _ = run_plan(capsys, suite_file, "--json")
    rows = {(r["router"], r["capacity"]): r for r in map(json.loads, out.splitlines())}
    for router, capacity in [("dense", 1.0), ("isoflop", 0.25), ("mod", 0.5)]:
        model = build_model(MODEL, router=router, capacity=capacity, num_classes=10)
        assert rows[router, capacity]["params"] == sum(p.numel() for p in model.parameters())
    assert rows["isoflop", 0.25]["params"] < rows["dense", 1.0]["params"]  # truncated depth


def test_table_has_aligned_columns_and_totals(suite_file, capsys):
    code, out, _ = run_plan(capsys, suite_file)
    assert code == 0
    lines = out.splitlines()
    header = lines[1]
    for column in ("id", "stage", "model", "router", "capacity", "dataset", "seed", "lr", "params", "GMACs", "ratio"):
        assert column in header.split()
    body = lines[2:-1]
    assert len(body) == 18
    assert lines[-1].startswith("18 cells: search 4, main 14")
    assert all("from search" in row for row in body if row.split()[1] == "main")
    ratio_end = header.index("ratio") + len("ratio")
    assert all(row[ratio_end - 5:ratio_end].strip() for row in body)  # right-aligned under its header


def test_invalid_suite_exits_2_with_every_problem(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE.replace("capacity: [0.25, 0.5]", "capacity: [0.25, 1.5]").replace("epochs: 1", "epochs: x"))
    code, out, err = run_plan(capsys, str(path))
    assert code == 2 and out == ""
    assert f"{path}:6: defaults.recipe.epochs:" in err
    assert f"{path}:17: stages[1].grid.capacity[1]:" in err


def test_missing_dataset_warns_but_plans(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.replace("dataset: bundled:digits", "dataset: /nowhere/cars-shards"))
    code, out, err = run_plan(capsys, str(path), "--json", "--set", "stages.main.grid.seed=0")
    assert code == 0
    assert "warning:" in err and "/nowhere/cars-shards" in err and "bench.py shards" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4 + 7 and all(r["num_classes"] == 10 for r in rows)  # the model's default
