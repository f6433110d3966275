"""Adding a router is one file and one `declare_router` line: a router written outside the
package is then costed, built, benchmarked, drawn in the report and accepted by suites."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
import textwrap

import matplotlib
import pytest
import torch

from amod_bench.routers import RouterTraits, declare_router, list_routers
from amod_bench.routers.traits import linear_score_macs
import cell_configs
from fixtures_report import Cell, write_suite

MODEL = "vit_nano_patch7_28"  # 17 tokens, width 64, depth 6: blocks 1, 3, 5 route
TOY_ROUTER = '''
from amod_bench.routers import register_router
from amod_bench.routers.base import Router


@register_router("toy")
class NormRouter(Router):
    """Keeps the tokens of largest p-norm."""

    def __init__(self, *, dim, num_heads=1, layer_index=0, p: float = 2.0):
        super().__init__(dim=dim, num_heads=num_heads, layer_index=layer_index)
        self.p = p

    def forward(self, x, attn_stat=None):
        return x.norm(p=self.p, dim=-1)

    def gate(self, kept_scores):
        return None
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy router, declared for this test only: the registries are restored afterwards."""
    from amod_bench import costs
    from amod_bench.routers import _registry, traits

    monkeypatch.setattr(traits, "_DECLARED", dict(traits._DECLARED))
    monkeypatch.setattr(_registry, "_ROUTERS", dict(_registry._ROUTERS))
    (tmp_path / "toy_router_mod.py").write_text(TOY_ROUTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    # the one line that adds a router:
    declare_router(RouterTraits(name="toy", module="toy_router_mod", label="Toy", routes=True,
                                options={"p": float}, score_macs=linear_score_macs))
    yield tmp_path
    sys.modules.pop("toy_router_mod", None)
    costs._params.cache_clear()  # its cache key names the toy router


def test_costed(toy):
    from amod_bench import costs, flops

    macs = flops.count_macs(MODEL, router="toy", capacity=0.5)
    assert macs.router == 3 * 17 * 64  # its declared score cost, N d per routed block
    assert macs.routed_blocks == 3 * flops.block_macs(8, 64, 256)
    config = cell_configs.cell("toy-x", model=MODEL, router="toy", capacity=0.5, router_options={"p": 1.0}).config
    toy_costs = costs.cell_costs(config, num_classes=10)
    assert toy_costs.gmacs == macs.total / 1e9 and toy_costs.flop_ratio_dense < 1
    dense = costs.cell_costs(dataclasses.replace(config, router="dense", router_options={}), num_classes=10)
    assert toy_costs.params == dense.params  # a parameter-free router


def test_built(toy):
    from amod_bench.models import build_model

    model = build_model(MODEL, router="toy", capacity=0.5, p=1.0).eval()
    assert type(model.blocks[1].router).__name__ == "NormRouter" and model.blocks[1].router.p == 1.0
    with torch.no_grad():
        logits, kept = model(torch.randn(2, 3, 28, 28), return_routing=True)
    assert logits.shape == (2, 10) and sorted(kept) == [1, 3, 5]
    assert all(k.shape == (2, 8) for k in kept.values())
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['q'\]; it accepts \['p'\]"):
        build_model(MODEL, router="toy", q=1.0)


def test_benchmarked(toy, tmp_path):
    from amod_bench import cli

    argv = ["perf", "--quick", "--routers", "dense,toy", "--capacities", "0.5", "--modes", "infer", "--no-memory",
            "--no-loader", "--no-figure", "--warmup", "0", "--iters", "1", "--out", str(tmp_path), "--name", "toy"]
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    rows = {r["router"]: r for r in json.loads((tmp_path / "toy.json").read_text())["rows"]}
    assert rows["toy"]["error"] is None and rows["toy"]["infer_step_time"] > 0
    assert rows["toy"]["kept_tokens"] == 8 and rows["toy"]["flop_ratio"] < 1


def test_drawn_in_the_report(toy, tmp_path):
    from amod_bench.report import convergence, figures, verdict, zero_shot
    from amod_bench.report.build import ReportOptions, build_report
    from amod_bench.report.groups import add_variant_columns
    from amod_bench.report.load import load_results

    knots = {"dense": [(0, 20.0), (6, 80.0), (10, 80.0)], "mod": [(0, 20.0), (5, 80.0), (10, 80.0)],
             "toy": [(0, 20.0), (4, 80.0), (10, 80.0)]}
    root = write_suite(tmp_path / "results", "toy", [
        Cell(router, None if router == "dense" else 0.5, seed, knots[router])
        for router in knots for seed in (0, 1)])
    build_report([root], tmp_path / "report", ReportOptions(n_boot=50, figures=False), log=lambda m: None)
    assert "| 0.5 | Toy vs MoD |" in (tmp_path / "report" / "index.md").read_text()

    res = load_results(root)
    cells, _, _ = add_variant_columns(res.cells)
    speed = convergence.speedups(convergence.times_to_target(cells, res.evals), n_boot=50, seed=0)
    effects = verdict.effects(cells, zero_shot.step0_top1(cells, res.evals), speed)
    fig = figures.forest_figure(effects, verdict.MEASURES)
    try:
        labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        assert "C=0.5 · Toy vs MoD" in labels, labels
        bars = [c for ax in fig.axes for c in ax.collections if c.get_gid() == "ci"][0]
        assert figures.router_color("toy") in {matplotlib.colors.to_hex(c) for c in bars.get_colors()}
    finally:
        figures.close(fig)


def test_accepted_by_the_suite_validator(toy, tmp_path):
    from amod_bench.suite import SuiteError, expand, load_suite

    def suite_with_options(options: str) -> str:
        path = tmp_path / "suite.yaml"
        path.write_text(textwrap.dedent(f"""\
            name: toy
            description: a router added by one declaration
            defaults:
              grid: {{model: {MODEL}, dataset: bundled:digits, seed: 0}}
              recipe: {{epochs: 1, batch_size: 32, lr: 1e-3}}
              router_options:
                toy: {options}
            stages:
              - name: main
                grid: {{router: [dense, toy], capacity: 0.5}}
            """))
        return str(path)

    cells = expand(load_suite(suite_with_options("{p: 1.0}"), check_data=False))
    assert len(cells) == 2 and sum("toy" in c.id for c in cells) == 1
    with pytest.raises(SuiteError, match=r"router 'toy' has no option 'q' \(allowed: p\)"):
        load_suite(suite_with_options("{q: 1.0}"), check_data=False)


def test_the_declaration_is_gone_after_the_tests_that_used_it():
    from amod_bench.routers import get_router_class

    assert "toy" not in list_routers() and "toy_router_mod" not in sys.modules
    with pytest.raises(ValueError, match="unknown router 'toy'"):
        get_router_class("toy")
