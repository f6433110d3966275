"""Routed timm ViTs: registry, routing behaviour, timm checkpoints, torch.compile.

Small presets except where a named timm model is the point; ViT-L is only ever
built on the meta device. No test downloads anything.
"""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from amod_bench import flops
from amod_bench.models import build_model, list_models, model_config
from amod_bench.routers import get_router_class, list_routers
from amod_bench.routers.layout import kept_tokens

PRESET = "vit_nano_patch7_28"  # 17 tokens, width 64, depth 6: builds and runs in milliseconds
TIMM_NAMES = ["deit_tiny_patch16_224", "deit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224"]
ROUTING = [name for name in list_routers() if get_router_class(name).routes]
ATTENTION_SCORED = [name for name in ROUTING if get_router_class(name).attention_stat]


def spiky_(model, seed=0):
    """Re-draw the weights large enough that attention is far from uniform (distinct scores)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or name.endswith("_token") or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]) * 2.0)
    return model


def images(n=3, size=28, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def pair(router, capacity, **kw):
    """(dense, routed) presets sharing weights (routers keep their own init)."""
    dense = spiky_(build_model(PRESET)).eval()
    routed = build_model(PRESET, router=router, capacity=capacity, **kw).eval()
    missing, unexpected = routed.load_state_dict(dense.state_dict(), strict=False)
    assert not unexpected and all(".router." in key for key in missing)
    return dense, routed


# ---- registry and configs


def test_names_and_presets():
    names = list_models()
    assert set(TIMM_NAMES) <= set(names)
    presets = [n for n in names if n not in TIMM_NAMES]
    assert len(presets) >= 2
    for name in presets:
        cfg = model_config(name)
        tokens = (cfg["img_size"] // cfg["patch_size"]) ** 2 + 1
        assert 28 <= cfg["img_size"] <= 32 and cfg["patch_size"] in (4, 7) and 6 <= cfg["depth"] <= 8
        assert 48 <= cfg["embed_dim"] <= 192 and cfg["embed_dim"] % cfg["num_heads"] == 0 and tokens <= 65
        assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)


def test_model_config_keys_and_unknown_name():
    assert set(model_config(PRESET)) == {"patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "img_size",
                                         "in_chans", "num_classes", "mean", "std"}
    with pytest.raises(ValueError, match="valid models.*Did you mean 'deit_small_patch16_224'"):
        model_config("deit_smal_patch16_224")


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_names_match_timm_on_meta(name):
    with torch.device("meta"):
        ours, theirs = build_model(name), timm.create_model(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    cfg, pcfg = model_config(name), theirs.pretrained_cfg
    assert (cfg["mean"], cfg["std"], cfg["num_classes"]) == (tuple(pcfg["mean"]), tuple(pcfg["std"]), 1000)
    assert timm.data.resolve_model_data_config(ours)["mean"] == pcfg["mean"]


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_with_data_config(name):
    cfg = model_config(name)
    with torch.device("meta"):
        model = build_model(name, router="amod")
    data = timm.data.resolve_model_data_config(model)
    assert data["input_size"] == (3, cfg["img_size"], cfg["img_size"])
    assert (data["mean"], data["std"]) == (cfg["mean"], cfg["std"])
    assert sorted(model.routing["routed_layers"]) == list(range(1, cfg["depth"], 2))


@pytest.mark.parametrize("router", list_routers())
def test_every_router_builds_and_runs(router):
    model = build_model(PRESET, router=router, capacity=0.25).eval()
    logits = model(images())
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    out, routing = model(images(), return_routing=True)
    assert torch.equal(out, logits) or router == "random"
    if get_router_class(router).routes:
        assert sorted(routing) == [1, 3, 5]
        assert all(v.shape == (3, kept_tokens(17, 0.25)) and v.dtype == torch.int64 for v in routing.values())
    else:
        assert routing == {}


def test_isoflop_model_is_truncated_to_the_matched_depth():
    for capacity in (0.125, 0.5, 1.0):
        model = build_model(PRESET, router="isoflop", capacity=capacity)
        assert len(model.blocks) == flops.isoflop_depth(PRESET, capacity=capacity) <= 6


def test_img_size_and_num_classes_overrides():
    model = build_model("vit_nano_patch4_28", router="amod", img_size=32, num_classes=5).eval()
    assert model.pos_embed.shape[1] == 65 and model(images(2, 32)).shape == (2, 5)
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 32, 32)


# ---- build-time errors


@pytest.mark.parametrize("kwargs,match", [
    (dict(router="amdo"), "valid routers.*Did you mean 'amod'"),
    (dict(router="mod", capacity=0.0), "capacity"),
    (dict(router="mod", capacity=1.5), "capacity"),
    (dict(router="mod", routed_layers="every_third"), "routed_layers"),
    (dict(router="mod", routed_layers=[6]), "routed_layers"),
    (dict(router="dense", routed_layers="last:9"), "routed_layers"),
    (dict(router="amod", routed_layers=[0, 2]), "cannot route block 0"),
    (dict(router="cls", routed_layers=[2, 3]), "block 2 is routed too"),
    (dict(router="amod", cls_policy="always"), "cls_policy"),
    (dict(router="mod", alpha=2.0), "unknown option"),
    (dict(router="dense", score_impl="chunked"), "unknown option"),
    (dict(router="amod", score_impl="flash"), "score_impl"),
    (dict(pretrained="timm"), "no published weights"),
    (dict(pretrained=True), "pretrained must be"),
])
def test_bad_configurations_are_rejected_at_build_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(PRESET, **kwargs)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_model(PRESET, pretrained=tmp_path / "nope.safetensors")


def test_grad_checkpointing_is_refused():
    with pytest.raises(NotImplementedError):
        build_model(PRESET, router="mod").set_grad_checkpointing(True)


# ---- routing behaviour


@pytest.mark.parametrize("router,options", [
    ("amod", {}), ("amod", {"score_impl": "chunked"}), ("cls", {}), ("cls", {"score_impl": "chunked"}),
    ("random", {}), ("mod_tanh", {}),
])
def test_full_capacity_reproduces_dense_logits(router, options):
    dense, routed = pair(router, 1.0, **options)
    x = images()
    torch.testing.assert_close(routed(x), dense(x), rtol=1e-5, atol=1e-5)


def test_full_capacity_mod_differs_from_dense():  # guards the test above: the gate really is applied
    dense, routed = pair("mod", 1.0)
    assert not torch.allclose(routed(images()), dense(images()), atol=1e-3)


@pytest.mark.parametrize("router", ROUTING)
@pytest.mark.parametrize("cls_policy", ["compete", "keep"])
def test_skipped_tokens_pass_bit_identical_and_k_are_kept(router, cls_policy):
    _, model = pair(router, 0.3, cls_policy=cls_policy)
    seen = {}
    for i in model.routing["routed_layers"]:
        model.blocks[i].register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (args[0], *out)))
    _, routing = model(images(4), return_routing=True)
    k = kept_tokens(17, 0.3)
    assert sorted(seen) == sorted(routing) == [1, 3, 5]
    for i, (x_in, x_out, _, idx) in seen.items():
        assert torch.equal(idx, routing[i]) and idx.shape == (4, k)
        kept = torch.zeros(4, 17, dtype=torch.bool).scatter_(1, idx, True)
        assert (kept.sum(1) == k).all()
        assert torch.equal(x_out[~kept], x_in[~kept])
        assert not torch.equal(x_out[kept], x_in[kept])
        if cls_policy == "keep":
            assert kept[:, 0].all()


@pytest.mark.parametrize("score_impl", ["explicit", "chunked"])
def test_amod_keeps_top_k_of_independent_attention_column_mean(score_impl):
    _, model = pair("amod", 0.5, score_impl=score_impl)
    normed = {}
    for i in model.routing["routed_layers"]:
        model.blocks[i - 1].norm1.register_forward_hook(lambda m, a, out, i=i: normed.__setitem__(i, out))
    _, routing = model(images(4), return_routing=True)
    for i, h in normed.items():
        attn = model.blocks[i - 1].attn
        B, N, D = h.shape
        qkv = F.linear(h, attn.qkv.weight, attn.qkv.bias).reshape(B, N, 3, attn.num_heads, D // attn.num_heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, H, N, dh)
        probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // attn.num_heads), dim=-1)
        received = probs.mean(dim=(1, 2))  # attention each token receives: column mean
        torch.testing.assert_close(received.sum(-1), torch.ones(B))
        expected = received.topk(kept_tokens(N, 0.5), dim=1).indices.sort(dim=1).values
        assert torch.equal(routing[i], expected)


@pytest.mark.parametrize("router", ["amod", "cls", "random"])
def test_parameter_free_routers_add_no_parameters(router):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model(PRESET, router=router)) == count(build_model(PRESET))
    assert count(build_model(PRESET, router="mod")) == count(build_model(PRESET)) + 3 * 64


def _router_scores(model, x):
    scores = []
    for i in model.routing["routed_layers"]:
        model.blocks[i].router.register_forward_hook(lambda m, a, out: scores.append(out))
    # a loss on every token: through the logits alone, the last block's router only
    # learns from images whose CLS it kept (never, for mod_tanh's tied zero scores)
    loss = model.forward_features(x).pow(2).mean()
    return scores, loss


@pytest.mark.parametrize("router", ["mod", "mod_tanh"])
def test_learned_routers_get_gradients(router):
    model = build_model(PRESET, router=router, capacity=0.5)
    scores, loss = _router_scores(model, images())
    loss.backward()
    assert all(s.requires_grad for s in scores)
    for i in model.routing["routed_layers"]:
        grad = model.blocks[i].router.weight.grad
        assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("router", ["amod", "cls", "random"])
def test_routing_passes_no_gradient(router):
    model = build_model(PRESET, router=router, capacity=0.5)
    scores, loss = _router_scores(model, images().requires_grad_())
    assert len(scores) == 3 and not any(s.requires_grad for s in scores)
    loss.backward()  # the kept tokens still train the blocks
    assert model.blocks[1].attn.qkv.weight.grad.abs().sum() > 0


def test_random_routing_reproducible_per_seed():
    routings = []
    for seed in (3, 3, 4):
        _, routing = build_model(PRESET, router="random", seed=seed)(images(), return_routing=True)
        routings.append(torch.cat(list(routing.values()), 1))
    assert torch.equal(routings[0], routings[1]) and not torch.equal(routings[0], routings[2])


def test_training_mode_with_drop_path_runs():
    model = build_model(PRESET, router="amod", drop_path_rate=0.1).train()
    model(images()).sum().backward()


# ---- torch.compile


@pytest.mark.parametrize("router", ["mod", "amod"])
def test_torch_compile_matches_eager(router):
    torch._dynamo.reset()
    _, model = pair(router, 0.5)
    # aot_eager: dynamo capture (fullgraph: no graph break, static shapes) and AOTAutograd
    # tracing of the whole model, without inductor's minute-long C++ build on a 2-core CPU;
    # inductor itself runs the gather/scatter path in test_routers.py.
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = images(4)
    (out_c, routing_c), (out_e, routing_e) = compiled(x, return_routing=True), model(x, return_routing=True)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(routing_c[i], routing_e[i]) for i in routing_e)
    if router != "mod":
        return
    grads = []
    for fn in (compiled, model):  # training: the backward graph through gather / scatter and the gate
        model.zero_grad()
        fn(x, return_routing=True)[0].logsumexp(-1).sum().backward()  # same call: no recompile
        grads.append(model.blocks[1].router.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


# ---- timm checkpoints

PRESET_ARCH = dict(img_size=28, patch_size=7, embed_dim=64, depth=6, num_heads=2, num_classes=10)  # = PRESET


def _save(model, folder):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "ckpt.safetensors")
    torch.save(state, folder / "ckpt.pth")
    torch.save({"state_dict": state}, folder / "ckpt.bin")  # a training checkpoint's wrapper
    return state


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    """timm.create_model of the preset's architecture (random weights), saved in three formats."""
    torch.manual_seed(0)
    model = spiky_(timm.create_model("vit_tiny_patch16_224", **PRESET_ARCH), seed=1).eval()
    folder = tmp_path_factory.mktemp("timm_preset")
    state = _save(model, folder)
    x = images(3)
    with torch.no_grad():
        return folder, state, x, model(x)


@pytest.fixture(scope="module")
def deit_checkpoint(tmp_path_factory):
    """timm.create_model("deit_tiny_patch16_224") (random weights) saved as .safetensors."""
    torch.manual_seed(0)
    model = spiky_(timm.create_model("deit_tiny_patch16_224"), seed=2).eval()
    folder = tmp_path_factory.mktemp("deit")
    state = _save(model, folder)
    x = images(1, 224)
    with torch.no_grad():
        return folder / "ckpt.safetensors", state, x, model(x)


@pytest.mark.parametrize("filename", ["ckpt.safetensors", "ckpt.pth", "ckpt.bin"])
def test_timm_checkpoint_reproduces_timm_logits(timm_checkpoint, filename):
    folder, _, x, logits = timm_checkpoint
    model = build_model(PRESET, router="dense", pretrained=folder / filename).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=1e-5, atol=1e-5)


def test_deit_checkpoint_reproduces_timm_logits_and_reinits_head(deit_checkpoint):
    path, state, x, logits = deit_checkpoint
    model = build_model("deit_tiny_patch16_224", router="dense", pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=1e-5, atol=1e-5)
    model = build_model("deit_tiny_patch16_224", router="amod", num_classes=7, pretrained=str(path))
    assert model.head.weight.shape == (7, 192) and torch.equal(model.head.bias, torch.zeros(7))
    assert torch.equal(model.blocks[11].mlp.fc2.weight, state["blocks.11.mlp.fc2.weight"])


@pytest.mark.parametrize("router", list_routers())
def test_dense_timm_checkpoint_loads_into_every_router(timm_checkpoint, router):
    folder, state, x, _ = timm_checkpoint
    model = build_model(PRESET, router=router, capacity=0.5, pretrained=str(folder / "ckpt.safetensors")).eval()
    own = model.state_dict()
    assert len(model.blocks) == (flops.isoflop_depth(PRESET, capacity=0.5) if router == "isoflop" else 6)
    for key, value in own.items():
        if ".router." not in key:
            assert torch.equal(value, state[key]), key
    routers = {k: v for k, v in own.items() if ".router." in k}
    if router == "mod":  # fresh init: a working router, not zeros
        assert routers and all(v.abs().sum() > 0 for v in routers.values())
    elif router == "mod_tanh":  # zero init: the pretrained model is unchanged at step 0
        assert routers and all(torch.equal(v, torch.zeros_like(v)) for v in routers.values())
    else:
        assert not routers
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_head_is_reinitialised_when_num_classes_differs(timm_checkpoint):
    folder, state, _, _ = timm_checkpoint
    model = build_model(PRESET, router="mod", num_classes=4, pretrained=folder / "ckpt.pth")
    assert model.head.weight.shape == (4, 64) and torch.equal(model.head.bias, torch.zeros(4))
    assert torch.equal(model.pos_embed, state["pos_embed"])
    headless = build_model(PRESET, router="mod", num_classes=0, pretrained=folder / "ckpt.pth")
    assert "head.weight" not in headless.state_dict()


def test_routed_checkpoint_round_trip_and_pos_embed_resampling(tmp_path):
    source = spiky_(build_model("vit_nano_patch4_28", router="mod", num_classes=3))
    save_file(source.state_dict(), tmp_path / "mod.safetensors")
    same = build_model("vit_nano_patch4_28", router="mod", num_classes=3, pretrained=tmp_path / "mod.safetensors")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    bigger = build_model("vit_nano_patch4_28", router="amod", num_classes=3, img_size=32,
                         pretrained=tmp_path / "mod.safetensors")  # 7x7 -> 8x8 grid, router keys dropped
    assert bigger.pos_embed.shape == (1, 65, 96) and torch.equal(bigger.cls_token, source.cls_token)
    assert bigger(images(1, 32)).shape == (1, 3)
