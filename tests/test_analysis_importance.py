"""Token importance and routing diagnostics (`bench.py analyze importance`), on a tiny ViT with known answers.

No Ray: the analysis reads a results folder and its checkpoints; here the folder is synthetic and the
checkpoints are real safetensors files of vit_nano_patch7_28 (17 tokens, depth 6, routed blocks 1, 3, 5).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import Block

from amod_bench.results import ANALYSIS_DIR, ANALYSIS_INPUTS, CORRELATIONS, DIAGNOSTICS, PRECISION_AT_K
from amod_bench.analysis import importance as imp
from amod_bench.analysis.cli import AnalysisError, analyze_importance
from amod_bench.cli import main as bench_main
from amod_bench.models import build_model
from amod_bench.report.importance import importance_section
from amod_bench.routers.layout import kept_tokens
from amod_bench.routers.select import select_tokens
from fixtures_report import DENSE_KNOTS, Cell, write_suite

MODEL = "vit_nano_patch7_28"
BLOCKS = [1, 3, 5]


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    return build_model(MODEL, router="dense").eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 3, 28, 28, generator=g), torch.arange(5) % 10


def naive_importance(model, images, labels, block_input, block, definition):
    """The definition read literally: one forward per left-out token, the dense loss from model(images)."""
    dense_loss = F.cross_entropy(model(images), labels, reduction="none")
    n_tokens = block_input.shape[1]
    out = torch.empty(block_input.shape[0], n_tokens)
    for i in range(n_tokens):
        keep = [j for j in range(n_tokens) if j != i]
        if definition == "skip":
            x = block_input.clone()
            x[:, keep] = Block.forward(model.blocks[block], block_input[:, keep])
            start = block + 1
        else:
            x, start = block_input[:, keep], block
        for b in range(start, len(model.blocks)):
            x = Block.forward(model.blocks[b], x)
        out[:, i] = F.cross_entropy(model.forward_head(model.norm(x)), labels, reduction="none") - dense_loss
    return out


@pytest.mark.parametrize("definition", ["skip", "remove"])
@torch.no_grad()
def test_batched_leave_one_out_equals_a_loop_over_tokens(dense, batch, definition):
    images, labels = batch
    inputs = imp.trace(dense, images, inputs_of=BLOCKS).block_inputs
    for b in BLOCKS:
        # 2 images per chunk: 5 images exercise full and partial chunks
        batched = imp.leave_one_out_importance(dense, inputs[b], labels, b, definition, max_sequences=2 * 17)
        naive = naive_importance(dense, images, labels, inputs[b], b, definition)
        patches = slice(1, None) if definition == "remove" else slice(None)
        torch.testing.assert_close(batched[:, patches], naive[:, patches], atol=1e-5, rtol=1e-4)
        assert naive[:, patches].abs().max() > 1e-4  # the comparison is not between zeros
        if definition == "remove":
            assert torch.isinf(batched[:, 0]).all()  # without CLS the head has nothing to read


@torch.no_grad()
def test_a_token_whose_block_update_is_zero_has_zero_importance(dense, batch):
    images, labels = batch
    model = build_model(MODEL, router="dense").eval()
    model.load_state_dict(dense.state_dict())
    assert model.global_pool == "token"  # the head reads CLS only
    block = model.blocks[3]  # whole block an identity: every token's update is zero
    for p in (block.attn.proj.weight, block.attn.proj.bias, block.mlp.fc2.weight, block.mlp.fc2.bias):
        p.zero_()
    last = model.blocks[5]  # no attention: each token's update depends on that token alone
    last.attn.proj.weight.zero_(), last.attn.proj.bias.zero_()
    inputs = imp.trace(model, images, inputs_of=BLOCKS).block_inputs

    at3 = imp.leave_one_out_importance(model, inputs[3], labels, 3)
    assert at3.abs().max() < 1e-6
    at5 = imp.leave_one_out_importance(model, inputs[5], labels, 5)
    assert at5[:, 1:].abs().max() < 1e-6  # a patch's own update never reaches the CLS the head reads
    assert (at5[:, 0].abs() > 1e-6).all()  # CLS's own update does
    assert imp.leave_one_out_importance(model, inputs[1], labels, 1).abs().max() > 1e-4  # a live block is not 0


def checkpoint(tmp_path, name, model) -> str:
    folder = tmp_path / "ckpt" / name
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return str(folder)


def routed_from(dense, router, capacity=0.5, seed=0, **kw):
    torch.manual_seed(seed)
    model = build_model(MODEL, router=router, capacity=capacity, routed_layers=BLOCKS, **kw).eval()
    missing, unexpected = model.load_state_dict(dense.state_dict(), strict=False)
    assert not unexpected and all(".router." in k for k in missing)
    return model


@torch.no_grad()
def test_amod_scores_are_the_received_attention_and_the_models_own(dense, batch):
    images, _ = batch
    parent_amod = routed_from(dense, "amod", capacity=1.0)  # every token kept: the dense forward
    scores = imp.trace(parent_amod, images).scores
    inputs = imp.trace(dense, images, inputs_of=[b - 1 for b in BLOCKS]).block_inputs
    for b in BLOCKS:  # column mean of the previous block's softmax attention, over heads and query rows
        attn = dense.blocks[b - 1].attn
        B, N, D = inputs[b - 1].shape
        qkv = attn.qkv(dense.blocks[b - 1].norm1(inputs[b - 1])).reshape(B, N, 3, attn.num_heads, -1)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, H, N, dh)
        probs = (q @ k.transpose(-2, -1) * attn.head_dim ** -0.5).softmax(-1)  # (B, H, N, N)
        torch.testing.assert_close(scores[b], probs.mean(dim=(1, 2)), atol=1e-6, rtol=1e-5)

    routed = imp.trace(routed_from(dense, "amod", capacity=0.5), images)  # an A-MoD model at C = 0.5
    torch.testing.assert_close(routed.scores[1], scores[1])  # same dense prefix before the first routed block
    for b in BLOCKS:  # the recorded scores are those the model ranked its tokens by
        assert torch.equal(routed.kept[b], select_tokens(routed.scores[b], kept_tokens(17, 0.5)))


def test_precision_and_correlations_on_known_scores():
    g = torch.Generator().manual_seed(2)
    importance = torch.randn(4, 17, generator=g)
    same = imp.token_statistics(importance, importance, k=4)
    assert np.allclose(same["precision"], 1.0) and np.allclose(same["spearman"], 1.0)
    assert np.allclose(same["pearson"], 1.0)
    assert np.allclose(imp.token_statistics(importance, importance, k=4, keep_cls=True)["precision"], 1.0)
    reverse = imp.token_statistics(-importance, importance, k=4)
    assert np.allclose(reverse["precision"], 0.0) and np.allclose(reverse["spearman"], -1.0)
    monotone = imp.token_statistics(importance.exp(), importance)  # same order, not linear
    assert np.allclose(monotone["spearman"], 1.0) and (monotone["pearson"] < 1.0 - 1e-3).all()
    assert np.isnan(imp.token_statistics(torch.zeros(4, 17), importance)["spearman"]).all()  # zero-init router
    removed = importance.clone()
    removed[:, 0] = float("inf")  # definition "remove": CLS first in the top-k, out of the correlations
    stats = imp.token_statistics(importance, removed, k=1)
    assert np.allclose(stats["spearman"], 1.0)
    assert np.allclose(stats["precision"], (importance.argmax(1) == 0).double().numpy())


def test_routing_statistics_known_answer():
    kept = {1: torch.tensor([[0, 1, 2], [1, 2, 3]]), 3: torch.tensor([[0, 1, 2], [4, 5, 6]]),
            5: torch.tensor([[0, 1, 3], [4, 5, 6]])}
    stats = imp.routing_statistics(kept, num_tokens=7)
    assert stats[1]["cls_kept"].tolist() == [1.0, 0.0] and np.isnan(stats[1]["jaccard_previous"]).all()
    assert stats[3]["jaccard_previous"].tolist() == [1.0, 0.0]
    assert stats[5]["jaccard_previous"].tolist() == [0.5, 1.0]


def synthetic_results(tmp_path, dense, with_checkpoints=True, dense_finetuned=None):
    """A pretrain parent and fine-tuned amod (2 seeds) and mod cells on bundled digits, real checkpoints;
    with `dense_finetuned` (a model), also a fine-tuned dense cell."""
    parent = "pretrain-nano-dense-s0"
    extra = {"img_size": 28, "routed_layers": BLOCKS, "init_from": parent, "dataset_path": "bundled:digits",
             "mean": [0.5] * 3, "std": [0.5] * 3, "router_options": {}}
    cells = [Cell("dense", None, 0, DENSE_KNOTS, model=MODEL, stage="pretrain", cell_id=parent,
                  checkpoint=checkpoint(tmp_path, "parent", dense),
                  extra={**extra, "routed_layers": None, "init_from": None})]
    for router, seed in (("amod", 0), ("amod", 1), ("mod", 0)):
        model = routed_from(dense, router, seed=seed)
        if router == "mod":
            torch.nn.init.normal_(model.blocks[3].router.weight)  # a learned router's logits
        ckpt = checkpoint(tmp_path, f"{router}-{seed}", model) if with_checkpoints else None
        cells.append(Cell(router, 0.5, seed, DENSE_KNOTS, model=MODEL, cell_id=f"finetune-{router}-s{seed}",
                          checkpoint=ckpt, extra=extra))
    if dense_finetuned is not None:
        cells.append(Cell("dense", None, 0, DENSE_KNOTS, model=MODEL, cell_id="finetune-dense-s0",
                          checkpoint=checkpoint(tmp_path, "dense-0", dense_finetuned),
                          extra={**extra, "routed_layers": None}))
    return write_suite(tmp_path, "imp", cells)


def test_cli_writes_the_analysis_and_the_report_renders_it(tmp_path, dense):
    root = synthetic_results(tmp_path, dense)
    assert bench_main(["analyze", "importance", str(root), "--images", "8"]) == 0

    out = root / ANALYSIS_DIR
    corr, prec, diag = (pd.read_csv(out / n) for n in (CORRELATIONS, PRECISION_AT_K, DIAGNOSTICS))
    series = set(zip(corr["router"], corr["source"]))
    assert series == {("amod", "parent"), ("cls", "parent"), ("random", "parent"), ("amod", "fine-tuned"),
                      ("mod", "fine-tuned")}
    assert sorted(corr["block"].unique()) == BLOCKS and (corr["spearman_n_images"] <= 8).all()
    amod = corr[(corr["router"] == "amod") & (corr["source"] == "fine-tuned")]
    assert amod["n_seeds"].tolist() == [2, 2, 2] and set(amod["seeds"]) == {"0 1"}
    # the fine-tuned A-MoD cells kept the parent's weights: at the first routed block their scores are the parent's
    first = corr[(corr["router"] == "amod") & (corr["block"] == 1)].set_index("source")
    assert first.loc["fine-tuned", "spearman"] == pytest.approx(first.loc["parent", "spearman"])
    assert set(prec["k"]) == {kept_tokens(17, 0.5)} and (prec["chance"] == 8 / 17).all()
    assert prec["precision"].between(0, 1).all()
    assert len(diag) == 2 * len(BLOCKS) and diag["cls_kept"].between(0, 1).all()
    assert diag.loc[diag["block"] == 1, "jaccard_previous"].isna().all()
    assert diag.loc[diag["block"] > 1, "jaccard_previous"].between(0, 1).all()
    inputs = json.loads((out / ANALYSIS_INPUTS).read_text())
    group = inputs["groups"][0]
    assert inputs["definition"] == "skip" and group["n_images"] == 8 and len(group["labels"]) == 8
    assert group["parent"] == group["reference"] == "pretrain-nano-dense-s0" and group["blocks"] == BLOCKS
    assert sorted(c["cell"] for c in group["cells"]) == ["finetune-amod-s0", "finetune-amod-s1", "finetune-mod-s0"]

    section = importance_section([root], tmp_path / "report" / "tables", tmp_path / "report" / "figures")
    assert [p.name for p in section.tables] == ["importance_correlations", "importance_precision_at_k",
                                                "routing_diagnostics"]
    assert "| block 1 | block 3 | block 5 |" in section.tables[0].markdown
    assert "amod (fine-tuned)" in section.tables[1].markdown and section.messages == []
    for piece in section.tables:
        assert (tmp_path / "report" / "tables" / f"{piece.name}.csv").is_file() and piece.how and piece.definition
    assert [p.name for p in section.figures[0].paths] == ["importance.png", "importance.pdf"]
    assert all(p.stat().st_size > 0 for p in section.figures[0].paths)
    assert importance_section([root], tmp_path / "report" / "tables").figures == []  # --no-figures


def test_missing_checkpoints_are_named(tmp_path, dense):
    root = synthetic_results(tmp_path, dense, with_checkpoints=False)
    with pytest.raises(AnalysisError, match="finetune-amod-s0: summary.json checkpoint is null") as info:
        analyze_importance(root, n_images=2)
    assert "finetune-mod-s0" in str(info.value)
    summary = root / "cells" / "finetune-mod-s0" / "summary.json"
    gone = str(tmp_path / "gone")
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "checkpoint": gone}))
    with pytest.raises(AnalysisError, match=f"finetune-mod-s0: {gone}/model.safetensors does not exist"):
        analyze_importance(root, n_images=2)
    assert importance_section([root], tmp_path / "t").messages[0].startswith("token importance: no analysis/ files")


def test_reference_dense_measures_the_dense_fine_tuned_cell(tmp_path, dense):
    with pytest.raises(AnalysisError, match="--reference dense: no finished dense cell of finetune"):
        analyze_importance(synthetic_results(tmp_path / "without", dense), n_images=2, reference="dense")
    tuned = build_model(MODEL, router="dense").eval()
    tuned.load_state_dict(dense.state_dict())
    torch.nn.init.normal_(tuned.head.weight)  # another model than the parent: other losses, other importance
    root = synthetic_results(tmp_path, dense, dense_finetuned=tuned)
    analyze_importance(root, n_images=4, reference="dense")
    corr = pd.read_csv(root / ANALYSIS_DIR / CORRELATIONS)
    assert set(corr["reference"]) == {"finetune-dense-s0"}
    assert set(corr["source"]) == {"dense", "fine-tuned"}
    of_dense = corr.set_index(["router", "source", "block"])["spearman"]
    analyze_importance(root, n_images=4)  # default: the parent
    of_parent = pd.read_csv(root / ANALYSIS_DIR / CORRELATIONS).set_index(["router", "source", "block"])["spearman"]
    mod = [("mod", "fine-tuned", b) for b in BLOCKS]  # the same scores against another model's importance
    assert not np.allclose(of_dense.loc[mod], of_parent.loc[mod])
