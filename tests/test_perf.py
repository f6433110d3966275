"""`bench.py perf`: the quick run prints its figures and writes the JSON rows and the figure.

Timing is never asserted (a shared CPU makes any threshold flaky): only that
every configuration was measured and reported with the documented keys.
"""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from amod_bench import cli, flops
from amod_bench.perf import benchmark, cli as perf_cli, measure

ROUTED = ["isoflop", "mod", "amod", "mod_tanh", "random", "cls"]
STEP_KEYS = {"kind", "model", "router", "capacity", "score_impl", "img_size", "tokens", "kept_tokens", "batch_size",
             "device", "dtype", "error", "gmacs", "flop_ratio", "param_count", "depth", "train_step_mem_mb",
             *(f"{mode}_{key}" for mode in ("infer", "train")
               for key in ("step_time", "samples_per_sec", "time_ratio", "efficiency", "over_mod", "rounds"))}
LOADER_KEYS = {"kind", "images_per_sec", "images_per_sec_per_worker", "loader_workers", "loader_img_size",
               "step_samples_per_sec", "loader_over_step", "workers_for_1_5x", "feeds_router", "error"}


def run_cli(argv):
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            rc = cli.main(argv)
    finally:
        torch.set_num_threads(threads)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("perf")
    rc, text = run_cli(["perf", "--quick", "--out", str(folder), "--name", "quick"])
    with open(folder / "quick.json") as f:
        return rc, text, json.load(f), folder


def test_quick_run_prints_the_figures(quick):
    rc, text, _, folder = quick
    assert rc == 0
    for needle in ("time ratio to dense", "efficiency", "FLOPr", "/mod trn", "peak training-step memory",
                   "images/s per worker", "workers for 1.5x", f"wrote {folder / 'quick.json'}",
                   f"wrote {folder / 'quick.png'}"):
        assert needle in text, needle
    table = text.split("step time (median ms)")[1].split("peak training-step memory")[0]
    assert "ERROR" not in table
    for router in ["dense"] + ROUTED:
        assert f"\n{router} " in table


def test_json_has_every_configuration_with_the_documented_keys(quick):
    _, _, result, _ = quick
    meta = result["meta"]
    env = meta["environment"]
    assert {"cpu_model", "cpu_count", "torch_threads", "torch", "timm", "device", "gpu_name", "date"} <= set(env)
    assert env["torch"] == torch.__version__ and env["torch_threads"] == 1 and env["device"] == "cpu"
    assert meta["arguments"]["quick"] and meta["arguments"]["model"] == perf_cli.QUICK["model"]

    steps = [r for r in result["rows"] if r["kind"] == "step"]
    assert sorted((r["router"], r["capacity"]) for r in steps if r["router"] != "dense") == sorted(
        (router, c) for router in ROUTED for c in (0.125, 0.5))
    assert [r["capacity"] for r in steps if r["router"] == "dense"] == [None]
    for row in steps:
        assert STEP_KEYS <= set(row), STEP_KEYS - set(row)
        assert row["error"] is None
        for mode in ("infer", "train"):
            assert row[f"{mode}_step_time"] > 0 and row[f"{mode}_rounds"] == perf_cli.QUICK["iters"]
            assert row[f"{mode}_time_ratio"] > 0
            assert row[f"{mode}_efficiency"] == pytest.approx(row["flop_ratio"] / row[f"{mode}_time_ratio"])
        assert row["train_step_mem_mb"] > 0
        options = {"score_impl": row["score_impl"]} if row["router"] in ("amod", "cls") else {}
        expected = 1.0 if row["router"] == "dense" else flops.flop_ratio(
            row["model"], router=row["router"], capacity=row["capacity"], **options)
        assert row["flop_ratio"] == pytest.approx(expected)
        has_partner = row["router"] not in ("dense", "mod")
        assert (row["train_over_mod"] is not None) == has_partner
        assert (row.get("mem_over_mod") is not None) == has_partner
    dense = next(r for r in steps if r["router"] == "dense")
    assert dense["train_time_ratio"] == 1.0 and dense["flop_ratio"] == 1.0

    memory = [r for r in result["rows"] if r["kind"] == "memory"]
    assert {(r["router"], r["capacity"], r["img_size"]) for r in memory} == {
        ("dense", None, 56), ("mod", 0.125, 56), ("mod", 0.5, 56), ("amod", 0.125, 56), ("amod", 0.5, 56)}
    assert all(r["train_step_mem_mb"] > 0 and r["tokens"] == 65 for r in memory)
    assert all(r["mem_over_mod"] > 0 for r in memory if r["router"] == "amod")

    loader = [r for r in result["rows"] if r["kind"] == "loader"]
    assert [r["feeds_router"] for r in loader][0] == "dense" and len(loader) == 2
    for row in loader:
        assert LOADER_KEYS <= set(row) and row["error"] is None
        assert row["images_per_sec_per_worker"] > 0 and row["workers_for_1_5x"] >= 1
        assert row["loader_over_step"] == pytest.approx(row["images_per_sec_per_worker"] / row["step_samples_per_sec"])


def test_figure_is_a_png(quick):
    _, _, _, folder = quick
    with open(folder / "quick.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


class _OutOfMemoryModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("where", ["build", "step"])
def test_a_failing_configuration_becomes_an_error_row(tmp_path, monkeypatch, where):
    build = benchmark.build

    def failing_build(model_name, variant, img_size, device, seed):
        if variant.router == "mod":
            if where == "build":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return _OutOfMemoryModel()
        return build(model_name, variant, img_size, device, seed)

    monkeypatch.setattr(benchmark, "build", failing_build)
    rc, text = run_cli(["perf", "--quick", "--routers", "dense,mod,amod", "--capacities", "0.5", "--no-loader",
                        "--mem-img-sizes", "", "--out", str(tmp_path), "--name", "oom"])
    assert rc == 0 and "ERROR OutOfMemoryError: CUDA out of memory" in text
    assert "1 configuration(s) failed" in text
    rows = {r["router"]: r for r in json.loads((tmp_path / "oom.json").read_text())["rows"]}
    assert rows["mod"]["error"].startswith("OutOfMemoryError") and rows["mod"]["train_step_time"] is None
    assert rows["amod"]["error"] is None and rows["amod"]["train_step_time"] > 0
    assert rows["amod"]["train_over_mod"] is None  # no partner timing to compare with


def test_cpu_peak_bytes_counts_tensor_storage_exactly():
    def step():
        a = torch.empty(2 ** 20, dtype=torch.float32)  # 4 MiB
        del a
        b = torch.empty(2 ** 18, dtype=torch.float32)  # 1 MiB, allocated after a is freed
        del b

    peak = measure.cpu_peak_bytes(step)
    assert peak == 4 * 2 ** 20


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_a_training_step_updates_the_weights_only_with_an_optimizer(with_optimizer):
    from amod_bench.perf.variants import Variant, build, inputs

    device = torch.device("cpu")
    model = build("vit_nano_patch7_28", Variant("mod", 0.5), 28, device, seed=0).train()
    x, y = inputs(28, 4, 10, device, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = measure.make_optimizer(model, device) if with_optimizer else None
    measure.make_step(model, "train", x, y, device, torch.float32, optimizer)()
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert any(changed) == with_optimizer
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1)


def test_the_ratio_figure_reads_the_router_declarations_when_it_draws(monkeypatch):
    """A router declared after perf was imported gets its declared colour and its score-path tag."""
    import argparse

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amod_bench.perf import output
    from amod_bench.routers import traits

    monkeypatch.setattr(traits, "_DECLARED", dict(traits._DECLARED))
    traits.declare_router(traits.RouterTraits("late", "late_router_mod", "Late", routes=True,
                                              options={"score_impl": str}, colour="#123456"))
    row = {"router": "late", "capacity": 0.5, "score_impl": "chunked", "flop_ratio": 0.6, "train_time_ratio": 0.7}
    fig, ax = plt.subplots()
    try:
        output.draw_ratio_axes(ax, [(row, "train")], "late")
        points = [c for c in ax.collections if c.get_label() == "late"]
        assert [matplotlib.colors.to_hex(c.get_facecolor()[0]) for c in points] == ["#123456"]
        assert [t.get_text() for t in ax.texts] == ["0.5 ch"]
    finally:
        plt.close(fig)
    parser = argparse.ArgumentParser()
    perf_cli.add_arguments(parser)
    assert parser.parse_args([]).routers[-1] == "late"  # the default benchmark: every router declared
