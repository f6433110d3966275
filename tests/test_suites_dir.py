"""Every suite shipped in suites/ validates, expands and plans; the paper suites mirror the
paper (grid, recipe, FLOP figures), and running one without its data stops at once, naming
the missing folder and the `bench.py shards` command that writes it, before Ray starts.

The suites are planned once per module, in-process (`bench.py plan --json`), from an empty
working directory, so that `data/...` never resolves to datasets someone has prepared: the
figures then always use the models' default heads, as in REFERENCE.md's FLOP figures.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

from amod_bench.cli import main as cli_main
from amod_bench.suite import expand, load_suite

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
SUITE_FILES = sorted(p for p in SUITES_DIR.iterdir() if p.suffix in (".yaml", ".yml"))
PAPER_SUITES = ("transfer.yaml", "imagenet.yaml", "lr_sweep.yaml", "capacity_sweep.yaml")

MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224")
# dense GMACs (multiply-accumulates) per 224 px image: REFERENCE.md section 2 (DeiT-S) and
# the timm / fvcore figures for the others, with their rounding as tolerance
DENSE_GMACS = {"deit_tiny_patch16_224": (1.3, 0.06), "deit_small_patch16_224": (4.6, 0.1),
               "vit_base_patch16_224": (17.6, 0.2), "vit_large_patch16_224": (61.6, 0.5)}
ROUTED = ("mod", "amod", "mod_tanh")
TRANSFER_DATASETS = {"stanford_cars": "cars", "oxford_iiit_pet": "pets", "flowers102": "flowers102"}


@contextlib.contextmanager
def _working_dir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """name -> (cells, plan rows, plan exit code, plan stderr), computed on first use."""
    workdir = tmp_path_factory.mktemp("suites-workdir")  # empty: no dataset resolves
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            path = str(SUITES_DIR / name)
            with _working_dir(workdir):
                cells = expand(load_suite(path, check_data=False))
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = cli_main(["plan", path, "--json"])
            rows = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
            cache[name] = (cells, rows, code, err.getvalue())
        return cache[name]

    return get


def test_the_paper_suites_are_there():
    names = {p.name for p in SUITE_FILES}
    assert set(PAPER_SUITES) <= names, sorted(names)


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda p: p.name)
def test_suite_validates_expands_and_plans(path, planned):
    cells, rows, code, err = planned(path.name)
    assert cells, f"{path.name} expands to no cells"
    assert code == 0, err
    assert [r["id"] for r in rows] == [c.id for c in cells]
    assert len({c.id for c in cells}) == len(cells)
    for row in rows:
        assert row["params"] > 0 and row["gmacs"] > 0 and row["flop_ratio"] > 0, row["id"]
        if path.name in PAPER_SUITES:  # explicit A-MoD scores: no arm costs more than full-depth dense
            assert row["flop_ratio"] <= 1.0 + 1e-3, row["id"]


# ------------------------------------------------------------------ transfer.yaml


def _by_arm(rows):
    """(model, dataset short name, router, capacity) -> [seeds]"""
    arms = defaultdict(list)
    for r in rows:
        arms[(r["model"], os.path.basename(r["dataset"]), r["router"], r["capacity"])].append(r["seed"])
    return arms


def test_transfer_grid_has_every_arm_with_three_seeds(planned):
    cells, rows, _, _ = planned("transfer.yaml")
    arms = _by_arm(rows)
    expected = {(m, d, "dense", 1.0) for m in MODELS for d in TRANSFER_DATASETS}
    expected |= {(m, d, router, c) for m in MODELS for d in TRANSFER_DATASETS
                 for router in ("isoflop", *ROUTED) for c in (0.125, 0.5)}
    assert set(arms) == expected
    assert all(sorted(seeds) == [0, 1, 2] for seeds in arms.values())
    assert len(rows) == 4 * 3 * 9 * 3
    for cell in cells:  # the paper's transfer recipe, from the dense ImageNet checkpoint
        c = cell.config.to_json()
        assert (c["optimizer"], c["lr"], c["batch_size"], c["epochs"], c["schedule"]) == ("sgd", 0.01, 64, 200, "cosine")
        assert c["pretrained"] == "timm" and c["img_size"] == 224 and c["eval_split"] == "val"
        assert (c["routed_layers"], c["cls_policy"]) == ("every_other", "compete")


def test_transfer_dense_gmacs_match_the_paper(planned):
    _, rows, _, _ = planned("transfer.yaml")
    dense = {r["model"]: r["gmacs"] for r in rows if r["router"] == "dense"}
    for model, (paper, tol) in DENSE_GMACS.items():
        assert dense[model] == pytest.approx(paper, abs=tol), model
    assert {r["gmacs"] for r in rows if r["router"] == "dense" and r["model"] == "deit_small_patch16_224"} \
        == {dense["deit_small_patch16_224"]}  # same figure for every dataset and seed


def test_transfer_flop_ratios_routed_and_isoflop(planned):
    from amod_bench.models import model_config

    _, rows, _, _ = planned("transfer.yaml")
    ratio = {(r["model"], r["router"], r["capacity"]): r["flop_ratio"] for r in rows}
    for model in MODELS:
        depth = model_config(model)["depth"]
        for capacity, (lo, hi) in ((0.125, (0.55, 0.57)), (0.5, (0.73, 0.76))):
            # half the blocks routed, keeping floor(C * 197) of 197 tokens
            routed = [ratio[(model, router, capacity)] for router in ROUTED]
            assert all(lo < r < hi for r in routed), (model, capacity, routed)
            assert max(routed) - min(routed) < 1e-3, (model, capacity, routed)  # routers cost ~nothing
            # isoFLOP: the nearest whole depth, so within half a block's share of the MoD model
            iso = ratio[(model, "isoflop", capacity)]
            assert abs(iso - ratio[(model, "mod", capacity)]) <= 0.5 / depth + 0.005, (model, capacity, iso)


def test_transfer_without_data_stops_before_ray(tmp_path, monkeypatch):
    """`bench.py run suites/transfer.yaml` with no data: exit 2 at once, each missing folder
    named with the command that writes it, no Ray started, nothing written."""
    import ray

    from amod_bench.runner import RunError, run_suite
    from amod_bench.suite import SuiteError

    was_initialized = ray.is_initialized()

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init called for a suite whose data is missing")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.chdir(tmp_path)
    path = str(SUITES_DIR / "transfer.yaml")

    started = time.monotonic()
    with pytest.raises((SuiteError, RunError)) as raised:
        run_suite(path)
    api_seconds = time.monotonic() - started

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["run", path])
    assert code == 2

    for message in (str(raised.value), err.getvalue()):
        for folder, source in TRANSFER_DATASETS.items():
            out = tmp_path / "data" / folder
            assert f"dataset folder {out} does not exist" in message
            assert f"python bench.py shards {source} " in message
            assert f"--out {out}" in message
    assert api_seconds < 15, f"took {api_seconds:.1f}s to refuse"  # loads and checks only (typically < 1 s)
    assert ray.is_initialized() == was_initialized
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------ the other paper suites


def test_imagenet_is_the_paper_recipe(planned):
    cells, rows, _, _ = planned("imagenet.yaml")
    assert {r["model"] for r in rows} == set(MODELS)
    arms = _by_arm(rows)
    for model in MODELS:
        got = {(router, c) for (m, _, router, c) in arms if m == model}
        assert got == {("dense", 1.0)} | {(r, c) for r in ("isoflop", *ROUTED) for c in (0.125, 0.5)}, model
    for cell in cells:
        c = cell.config.to_json()
        assert (c["optimizer"], c["lr"], c["batch_size"], c["epochs"], c["schedule"]) == ("adamw", 1e-5, 128, 100, "cosine")
        assert 0 < c["warmup_epochs"] < c["epochs"] and c["pretrained"] == "timm"
        assert os.path.basename(c["dataset"]) == "imagenet" and c["eval_split"] == "val"
        assert c["batch_size"] % c["resources"]["workers"] == 0


def test_lr_sweep_selects_per_router_on_heldout(planned):
    cells, rows, _, _ = planned("lr_sweep.yaml")
    search = [c for c in cells if c.stage == "search"]
    main = [c for c in cells if c.stage == "main"]
    assert search and main and len(search) + len(main) == len(cells)
    lrs = {c.config.recipe.lr for c in search}
    assert {1e-5, 1e-4} <= lrs and len(lrs) >= 3  # the paper's lr and the one that helped MoD
    assert all(c.config.recipe.eval_split == "heldout" for c in search)
    key = ("model", "router", "capacity", "dataset")
    for cell in main:
        c = cell.config.to_json()
        assert c["eval_split"] == "val" and c["lr"] is None
        assert c["select"]["stage"] == "search" and c["select"]["param"] == "lr"
        assert tuple(c["select"]["by"]) == key
        assert sorted(c["select"]["values"]) == sorted(lrs)  # one search cell per lr, same arm
    groups = defaultdict(set)
    for cell in main:
        groups[tuple(getattr(cell.config, k) for k in key)].add(cell.config.seed)
    assert {r["router"] for r in rows if r["stage"] == "main"} == {"dense", "isoflop", *ROUTED}
    assert all(seeds == {0, 1, 2} for seeds in groups.values())


def test_capacity_sweep_covers_capacities_and_ablations(planned):
    cells, rows, _, _ = planned("capacity_sweep.yaml")
    for router in ROUTED:
        caps = {r["capacity"] for r in rows if r["router"] == router and r["cls_policy"] == "compete"
                and r["routed_layers"] == "every_other"}
        assert caps == {0.125, 0.25, 0.5, 0.7, 1.0}, router
        assert {r["cls_policy"] for r in rows if r["router"] == router} == {"compete", "keep"}
        assert {r["routed_layers"] for r in rows if r["router"] == router} == {"every_other", "last:6"}
    # every routed layout has its own isoFLOP partner
    layouts = {(r["routed_layers"], r["capacity"]) for r in rows if r["router"] == "mod" and r["capacity"] < 1}
    assert layouts <= {(r["routed_layers"], r["capacity"]) for r in rows if r["router"] == "isoflop"}
    ratio = {(r["router"], r["capacity"], r["routed_layers"], r["cls_policy"]): r["flop_ratio"] for r in rows}
    assert ratio[("amod", 1.0, "every_other", "compete")] == pytest.approx(1.0, abs=1e-3)
    assert ratio[("mod", 0.5, "last:6", "compete")] > ratio[("mod", 0.5, "every_other", "compete")]
    per_dataset_seed = defaultdict(int)
    for r in rows:
        per_dataset_seed[(r["dataset"], r["seed"])] += 1
    assert len(per_dataset_seed) == 9 and set(per_dataset_seed.values()) == {34}
