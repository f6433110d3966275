"""Router registry, layout rules, token selection and the attention-score paths."""
from __future__ import annotations

import math

import pytest
import torch

from amod_bench.routers import create_router, get_router_class, list_routers, router_options
from amod_bench.routers.attention_stats import cls_attention, received_attention
from amod_bench.routers.base import Router
from amod_bench.routers.layout import (
    check_attention_predecessors, check_capacity, kept_tokens, resolve_routed_layers,
)
from amod_bench.routers.select import gather_tokens, scatter_tokens, select_tokens

SUITE_ROUTERS = {"dense", "isoflop", "mod", "amod", "mod_tanh", "random", "cls"}


def routing_routers():
    return [name for name in list_routers() if get_router_class(name).routes]


# ---- registry


def test_every_suite_router_is_registered():
    assert SUITE_ROUTERS <= set(list_routers())


def test_unknown_router_lists_valid_names_and_suggests():
    with pytest.raises(ValueError, match=r"valid routers: \[.*'amod'.*\].*Did you mean 'amod'"):
        create_router("amdo", dim=8)


def test_unknown_router_option_raises():
    with pytest.raises(ValueError, match="unknown option.*'alhpa'.*accepts \\['alpha'\\]"):
        create_router("mod_tanh", dim=8, alhpa=2.0)


@pytest.mark.parametrize("name", sorted(SUITE_ROUTERS))
def test_declared_traits_match_the_router_class(name):
    """The torch-free declaration cannot drift from the class it names."""
    import inspect

    from amod_bench.routers import router_traits

    traits, cls = router_traits(name), get_router_class(name)
    params = inspect.signature(cls.__init__).parameters
    keyword_only = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY
                    and p not in ("dim", "num_heads", "layer_index")]
    assert list(traits.options) == keyword_only
    assert traits.reads_attention == (cls.attention_stat is not None)
    assert cls.routes == traits.routes and cls.__module__ == traits.module
    has_parameters = any(True for _ in create_router(name, dim=64, num_heads=2).parameters())
    assert traits.learns == has_parameters


def test_router_traits_are_torch_free_and_declared_once():
    import subprocess
    import sys

    from amod_bench.routers import RouterTraits, declare_router, router_traits

    code = "import sys, amod_bench.routers.traits; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    amod = router_traits("amod")
    assert declare_router(RouterTraits(**{**vars(amod), "options": dict(amod.options)})) == amod
    with pytest.raises(ValueError, match="already declared"):
        declare_router(RouterTraits(**{**vars(amod), "label": "other"}))
    with pytest.raises(ValueError, match="learns needs routes=True"):
        RouterTraits("parametric_dense", "nowhere", "x", routes=False, learns=True)


@pytest.mark.parametrize("name", sorted(SUITE_ROUTERS))
def test_router_interface(name):
    router = create_router(name, dim=16, num_heads=2, layer_index=3)
    assert isinstance(router, Router) and router.name == name
    x = torch.randn(2, 9, 16)
    if not router.routes:
        with pytest.raises(RuntimeError, match="places no router"):
            router(x, None)
        return
    stat = torch.softmax(torch.randn(2, 9), -1) if router.attention_stat else None
    scores = router(x, stat)
    assert scores.shape == (2, 9)
    gate = router.gate(scores[:, :4])
    assert gate is None or gate.shape == (2, 4)
    assert (router.attention_probe() is not None) == (router.attention_stat is not None)


@pytest.mark.parametrize("name", ["amod", "cls", "random", "dense", "isoflop"])
def test_parameter_free_routers(name):
    assert sum(p.numel() for p in create_router(name, dim=32).parameters()) == 0


def test_router_options_are_declared():
    assert router_options("mod_tanh") == ["alpha"]
    assert router_options("random") == ["seed"]
    assert set(router_options("amod")) == {"score_impl", "chunk_size"}
    assert router_options("mod") == [] and router_options("dense") == []
    with pytest.raises(ValueError, match="score_impl"):
        create_router("amod", dim=8, score_impl="flash")


def test_mod_tanh_is_identity_at_init_and_scales_with_alpha():
    router = create_router("mod_tanh", dim=8, alpha=0.5)
    x = torch.randn(3, 5, 8)
    scores = router(x, None)
    assert torch.equal(scores, torch.zeros(3, 5)) and torch.equal(router.gate(scores), torch.ones(3, 5))
    with torch.no_grad():
        router.weight.fill_(10.0)
    gate = router.gate(router(x.abs() + 1, None))
    assert torch.allclose(gate, torch.full_like(gate, 1.5))


def test_random_router_is_seeded_and_reproducible():
    x = torch.zeros(2, 50, 4)
    a, b = create_router("random", dim=4, seed=7), create_router("random", dim=4, seed=7)
    first = [a(x, None) for _ in range(2)]
    assert torch.equal(first[0], b(x, None)) and torch.equal(first[1], b(x, None))
    assert not torch.equal(first[0], first[1])  # a stream, not one fixed draw
    assert not torch.equal(first[0], create_router("random", dim=4, seed=8)(x, None))
    assert not torch.equal(first[0], create_router("random", dim=4, seed=7, layer_index=1)(x, None))
    a.reset()
    assert torch.equal(a(x, None), first[0])


def test_random_router_resumes_its_stream_from_a_saved_position():
    # what a training checkpoint keeps, so a resumed cell routes as an uninterrupted one
    x = torch.zeros(2, 50, 4)
    a = create_router("random", dim=4, seed=7)
    assert a.rng_state() is None  # nothing drawn yet
    a(x, None)
    position = a.rng_state()
    expected = [a(x, None) for _ in range(2)]
    resumed = create_router("random", dim=4, seed=7)
    resumed.load_rng_state(position)
    assert all(torch.equal(resumed(x, None), e) for e in expected)


# ---- layout rules


def test_kept_tokens_matches_paper_counts():
    assert kept_tokens(197, 0.5) == 98 and kept_tokens(197, 0.125) == 24
    assert kept_tokens(197, 1.0) == 197
    assert kept_tokens(17, 0.01) == 1  # at least one token
    assert kept_tokens(100, 0.29) == 29  # 0.29 * 100 = 28.999999999999996 in floating point


@pytest.mark.parametrize("capacity", [0, 0.0, -0.5, 1.01, 2, float("nan"), "0.5", None, True])
def test_capacity_outside_unit_interval_raises(capacity):
    with pytest.raises(ValueError, match="capacity"):
        check_capacity(capacity)


def test_routed_layers_specs():
    assert resolve_routed_layers(12, "every_other") == (1, 3, 5, 7, 9, 11)
    assert resolve_routed_layers(7, "every_other") == (1, 3, 5)
    assert resolve_routed_layers(12, "last:4") == (9, 11)
    assert resolve_routed_layers(12, "last:3") == (9, 11)
    assert resolve_routed_layers(12, "last:1") == (11,)
    assert resolve_routed_layers(12, "last:12") == resolve_routed_layers(12, "every_other")
    assert resolve_routed_layers(12, [5, 2]) == (2, 5)


@pytest.mark.parametrize("spec", ["every_third", "last:0", "last:13", "last:x", [], [12], [-1], [1, 1], ["1"], 3])
def test_bad_routed_layers_raise(spec):
    with pytest.raises(ValueError, match="routed_layers"):
        resolve_routed_layers(12, spec)


@pytest.mark.parametrize("routed", [(0,), (1, 2), (3, 5, 6)])
def test_attention_routers_need_an_unrouted_predecessor(routed):
    with pytest.raises(ValueError, match="amod"):
        check_attention_predecessors("amod", routed)


# ---- selection, gather, scatter


def test_select_tokens_keeps_exactly_k_sorted_unique():
    scores = torch.randn(4, 33)
    idx = select_tokens(scores, 10)
    assert idx.shape == (4, 10) and idx.dtype == torch.int64
    assert torch.equal(idx, idx.sort(dim=1).values)
    assert all(len(set(row.tolist())) == 10 for row in idx)
    top = scores.topk(10, dim=1).indices.sort(dim=1).values
    assert torch.equal(idx, top)


def test_select_tokens_keep_cls_policy():
    scores = torch.randn(5, 20)
    scores[:, 0] = -100.0  # CLS would lose the competition
    assert not (select_tokens(scores, 4) == 0).any()
    idx = select_tokens(scores, 4, keep_cls=True)
    assert (idx[:, 0] == 0).all()
    assert torch.equal(idx[:, 1:], scores[:, 1:].topk(3, dim=1).indices.sort(dim=1).values + 1)


def _route_double(x, scores):
    idx = select_tokens(scores, 6)
    return scatter_tokens(x, idx, gather_tokens(x, idx) * 2.0 + 1.0), idx


def test_gather_scatter_leaves_skipped_rows_bit_identical():
    x, scores = torch.randn(3, 17, 8), torch.randn(3, 17)
    out, idx = _route_double(x, scores)
    kept = torch.zeros(3, 17, dtype=torch.bool).scatter_(1, idx, True)
    assert torch.equal(out[~kept], x[~kept])
    assert torch.equal(out[kept], x[kept] * 2.0 + 1.0)


def test_gather_scatter_under_torch_compile_matches_eager():
    torch._dynamo.reset()
    x, scores = torch.randn(3, 17, 8), torch.randn(3, 17)
    compiled = torch.compile(_route_double, fullgraph=True)  # inductor: the real code path
    (out_c, idx_c), (out_e, idx_e) = compiled(x, scores), _route_double(x, scores)
    assert torch.equal(idx_c, idx_e) and torch.equal(out_c, out_e)


# ---- attention-score paths: explicit softmax vs SDPA + chunked log-sum-exp


def _reference_probs(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, H, N, N)


SIZES = [(2, 3, 17, 8, 128), (2, 6, 197, 16, 64), (1, 2, 50, 32, 7), (3, 4, 65, 8, 65)]  # B, H, N, dh, chunk


@pytest.mark.parametrize("B,H,N,dh,chunk", SIZES)
def test_chunked_received_attention_matches_explicit(B, H, N, dh, chunk):
    g = torch.Generator().manual_seed(N)
    q, k, v = (torch.randn(B, H, N, dh, generator=g) for _ in range(3))
    out_e, r_e = received_attention(q, k, v, impl="explicit")
    out_c, r_c = received_attention(q, k, v, impl="chunked", chunk_size=chunk)
    r_ref = _reference_probs(q, k).mean(dim=(1, 2))  # column mean over heads and query rows
    torch.testing.assert_close(r_e, r_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(r_c, r_e, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r_c.sum(-1), torch.ones(B), rtol=0, atol=1e-5)
    for keep in (max(1, N // 8), N // 2):
        assert torch.equal(select_tokens(r_c, keep), select_tokens(r_e, keep))


@pytest.mark.parametrize("B,H,N,dh,chunk", SIZES)
def test_chunked_cls_attention_matches_explicit(B, H, N, dh, chunk):
    g = torch.Generator().manual_seed(N + 1)
    q, k, v = (torch.randn(B, H, N, dh, generator=g) for _ in range(3))
    _, s_e = cls_attention(q, k, v, impl="explicit")
    _, s_c = cls_attention(q, k, v, impl="chunked", chunk_size=chunk)
    torch.testing.assert_close(s_e, _reference_probs(q, k)[:, :, 0].mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(s_c, s_e, rtol=0, atol=1e-5)
    assert torch.equal(select_tokens(s_c, N // 4), select_tokens(s_e, N // 4))


@pytest.mark.parametrize("impl", ["explicit", "chunked"])
def test_attention_scores_carry_no_gradient(impl):
    q, k, v = (torch.randn(1, 2, 9, 4, requires_grad=True) for _ in range(3))
    out, stat = received_attention(q, k, v, impl=impl)
    assert out.requires_grad and not stat.requires_grad


# ---- explicit path: written-out softmax forward, fused backward, no N x N map kept


def _sdpa_grads(q, k, v, grad):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad))


@pytest.mark.parametrize("stat", ["received", "cls"])
@pytest.mark.parametrize("B,H,N,dh,chunk", SIZES)
def test_explicit_path_has_sdpa_gradients_and_keeps_no_attention_map(B, H, N, dh, chunk, stat):
    g = torch.Generator().manual_seed(N + 2)
    qkv = torch.randn(B, N, 3, H, dh, generator=g, requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # strided views, as in timm's Attention
    grad = torch.randn(B, H, N, dh, generator=g)
    fn = received_attention if stat == "received" else cls_attention
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        out, score = fn(q, k, v, impl="explicit", chunk_size=chunk)
    assert all(shape[-2:] != (N, N) for shape in saved)  # only q, k, v, out, lse: as SDPA
    out_ref, *grads_ref = _sdpa_grads(q, k, v, grad)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), grad), grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    probs = _reference_probs(q, k)
    torch.testing.assert_close(score, probs.mean(dim=(1, 2)) if stat == "received" else probs[:, :, 0].mean(1),
                               rtol=0, atol=1e-6)


def test_explicit_path_recompute_backward_off_cpu_matches(monkeypatch):
    """Devices without the CPU flash backward recompute SDPA in backward; same gradients."""
    from amod_bench.routers import attention_stats
    monkeypatch.setattr(attention_stats, "_CPU_FLASH_DTYPES", ())
    q, k, v = (torch.randn(2, 3, 33, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    grad = torch.randn(2, 3, 33, 8)
    q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
    out, _ = received_attention(q2, k2, v2, impl="explicit", chunk_size=16)
    out_ref, *grads_ref = _sdpa_grads(q, k, v, grad)
    for got, want in zip(torch.autograd.grad(out, (q2, k2, v2), grad), grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_explicit_path_with_attention_dropout_still_scores_before_dropout():
    q, k, v = (torch.randn(2, 3, 17, 8, requires_grad=True) for _ in range(3))
    out, score = received_attention(q, k, v, dropout_p=0.5, impl="explicit")
    torch.testing.assert_close(score, _reference_probs(q, k).mean(dim=(1, 2)), rtol=0, atol=1e-6)
    out.sum().backward()
    assert q.grad is not None and not score.requires_grad
