"""Analytic MACs: paper numbers, component math, isoFLOP rule, and agreement with
torch's FlopCounterMode on real routed forwards."""
from __future__ import annotations

import subprocess
import sys

import pytest

from amod_bench import flops
from amod_bench.models import model_config
from amod_bench.routers.layout import kept_tokens

DEIT_S = "deit_small_patch16_224"
PRESET = "vit_nano_patch4_28"  # 50 tokens, width 96, depth 6


def test_dense_deit_small_is_about_4_6_gmacs():
    macs = flops.count_macs(DEIT_S, router="dense")
    assert 4.55 < macs.gmacs < 4.65
    d, n = 384, 197
    assert macs.embed == 196 * d * 3 * 16 * 16
    assert macs.dense_blocks == 12 * (12 * n * d * d + 2 * n * n * d)
    assert macs.head == d * 1000 and macs.routed_blocks == macs.router == 0
    assert macs.flops == 2 * macs.total and macs.gflops == pytest.approx(2 * macs.gmacs)
    assert macs.as_dict()["total"] == macs.total


def test_kept_tokens_at_224():
    assert kept_tokens(197, 0.5) == 98 and kept_tokens(197, 0.125) == 24


@pytest.mark.parametrize("capacity,k", [(0.5, 98), (0.125, 24)])
def test_routed_components(capacity, k):
    d, n = 384, 197
    mod = flops.count_macs(DEIT_S, router="mod", capacity=capacity)
    assert mod.dense_blocks == 6 * (12 * n * d * d + 2 * n * n * d)
    assert mod.routed_blocks == 6 * (12 * k * d * d + 2 * k * k * d)
    assert mod.router == 6 * n * d
    amod = flops.count_macs(DEIT_S, router="amod", capacity=capacity)
    assert amod.router == 0 and amod.total == mod.total - mod.router
    chunked = flops.count_macs(DEIT_S, router="amod", capacity=capacity, score_impl="chunked")
    assert chunked.router == 6 * n * n * d  # q.k recomputed in the log-sum-exp pass


def test_paper_numbers_for_deit_small():
    dense = flops.count_macs(DEIT_S).total
    amod_05 = flops.count_macs(DEIT_S, router="amod", capacity=0.5)
    amod_0125 = flops.count_macs(DEIT_S, router="amod", capacity=0.125)
    assert flops.flop_ratio(DEIT_S, router="amod", capacity=0.5) == amod_05.total / dense
    assert 0.70 < amod_05.total / dense < 0.78 and 0.52 < amod_0125.total / dense < 0.60
    assert flops.isoflop_depth(DEIT_S, capacity=0.5) == 9
    assert flops.isoflop_depth(DEIT_S, capacity=0.125) == 7
    assert flops.flop_ratio(DEIT_S) == 1.0
    assert flops.train_macs_per_sample(DEIT_S, router="amod") == 3 * amod_05.total


@pytest.mark.parametrize("capacity", [0.125, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("model", [DEIT_S, "vit_large_patch16_224", PRESET])
def test_isoflop_depth_is_nearest(model, capacity):
    match = flops.isoflop_match(model, capacity=capacity)
    depth = model_config(model)["depth"]
    dense = flops.count_macs(model)
    per_block = dense.dense_blocks // depth

    def gap(L):
        return abs(dense.embed + dense.head + L * per_block - match.target_macs)

    assert all(gap(match.depth) <= gap(L) for L in range(1, depth + 1))
    assert match.ratio == match.macs / match.target_macs
    assert match.target_macs == flops.count_macs(model, router="mod", capacity=capacity).total
    assert flops.count_macs(model, router="isoflop", capacity=capacity).total == match.macs
    if capacity == 1.0:
        assert match.depth == depth


def test_isoflop_ties_go_to_the_shallower_model():
    # Hand-made config: N = 2 tokens (1 patch + CLS), d = 8, h = 32, no head, embed = 8*3*16 = 384.
    # block(n) = 768 n + 16 n^2: block(2) = 1600, block(1) = 784 (k = floor(0.5 * 2) = 1).
    cfg = dict(patch_size=4, embed_dim=8, depth=4, num_heads=1, img_size=4, num_classes=0)
    # depth 4, mod on blocks 1, 3: 2 * 1600 + 2 * 784 + router 2 * (2 * 8) = 4800 = exactly 3 blocks
    match = flops.isoflop_match(cfg, capacity=0.5)
    assert (match.target_macs, match.depth, match.ratio) == (384 + 4800, 3, 1.0)
    # depth 2, mod on block 1: 1600 + 784 + 16 = 2400 = 1.5 blocks, a tie between 1 and 2 blocks
    match = flops.isoflop_match(dict(cfg, depth=2), capacity=0.5)
    assert match.target_macs == 384 + 2400 and match.depth == 1


def test_every_declared_router_is_costed_from_its_traits():
    from amod_bench.routers import list_routers, router_traits

    for name in list_routers():
        traits = router_traits(name)
        macs = flops.count_macs(PRESET, router=name, capacity=0.5, routed_layers=[1, 3, 5])
        if traits.routes:
            assert macs.router == 3 * traits.score_macs(50, 96, "explicit"), name
        else:
            assert macs.routed_blocks == macs.router == 0, name
            full = flops.count_macs(PRESET).dense_blocks
            assert (macs.dense_blocks < full) == (traits.truncate_to_match is not None), name


@pytest.mark.parametrize("kwargs,match", [
    (dict(router="amdo"), "Did you mean 'amod'"),
    (dict(router="mod", capacity=0), "capacity"),
    (dict(router="mod", capacity=1.2), "capacity"),
    (dict(router="mod", routed_layers="last:99"), "routed_layers"),
    (dict(router="amod", routed_layers=[0]), "block 0"),
    (dict(router="amod", score_impl="flash"), "score_impl"),
    (dict(router="mod", cls_policy="never"), "cls_policy"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flops.count_macs(DEIT_S, **kwargs)


def test_count_macs_takes_a_config_dict_and_overrides():
    cfg = model_config(DEIT_S)
    assert flops.count_macs(cfg, router="amod") == flops.count_macs(DEIT_S, router="amod")
    small = flops.count_macs(DEIT_S, img_size=112, num_classes=10)
    assert small.embed == 49 * 384 * 768 and small.head == 3840


def test_flops_and_model_configs_import_without_torch():
    code = ("import sys; from amod_bench import flops; flops.count_macs('deit_small_patch16_224', router='amod');"
            "from amod_bench.routers import layout; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- against torch's FlopCounterMode on real forwards


def counted_macs(model, img_size):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # MATH: the CPU flash kernel has no FLOP formula and would count 0 for attention
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.randn(1, 3, img_size, img_size))
    return counter.get_total_flops() // 2  # the counter reports FLOPs = 2 x MACs


def _check(name, router, capacity, **options):
    from amod_bench.models import build_model

    model = build_model(name, router=router, capacity=capacity, **options).eval()
    analytic = flops.count_macs(name, router=router, capacity=capacity, **options).total
    assert counted_macs(model, model_config(name)["img_size"]) == pytest.approx(analytic, rel=0.01)


ROUTER_CASES = [("dense", {}), ("mod", {}), ("amod", {}), ("amod", {"score_impl": "chunked"}),
                ("cls", {}), ("cls", {"score_impl": "chunked"}), ("mod_tanh", {}), ("random", {}), ("isoflop", {})]


@pytest.mark.parametrize("capacity", [0.125, 0.5, 1.0])
@pytest.mark.parametrize("router,options", ROUTER_CASES)
def test_analytic_macs_match_flop_counter_on_preset(router, options, capacity):
    _check(PRESET, router, capacity, **options)


@pytest.mark.parametrize("router,capacity", [("dense", 1.0), ("mod", 0.5), ("amod", 0.125)])
def test_analytic_macs_match_flop_counter_on_deit_tiny(router, capacity):
    _check("deit_tiny_patch16_224", router, capacity)
