"""Token importance (A-MoD paper, arXiv 2412.20875, Fig. 7) and routing diagnostics, on a model.

Importance of token i at routed block position b, for the dense reference model
(by default the dense parent every routed cell was converted from), on one image
with label y:

- ``skip`` (default): loss(token i alone skips block b) - loss(dense). Block b runs
  on the other N-1 tokens, which attend only among themselves (as a routed block's
  kept tokens do), token i passes through unchanged, and every other block is dense:
  exactly the decision a router makes at b, one token at a time.
- ``remove`` (the paper's wording, "the token removed"): loss with token i deleted
  from the sequence at block b and every block after it - loss(dense). Removing the
  CLS token (index 0) leaves the classifier nothing to read, so its importance is
  +inf: first in any top-k, left out of the correlations.

Loss = cross-entropy of the model's logits with the image's label, no label smoothing.
Positive importance = the token helps. All N leave-one-out variants of an image run as
one batch: the prefix (blocks < b) runs once, then the block and the suffix run on
(images x N) sequences, chunked to `max_sequences` (`leave_one_out_importance`).

Router scores come from the models themselves: `trace` hooks each routed block's
router and records what it returns, so a score here is the one the model ranks its
tokens by (A-MoD: received attention of the previous block; EViT-style `cls`: that
block's CLS row; MoD / MoD-tanh: the learned logit x W_r; random: its uniform draw).

Statistics per image, over its N tokens (`token_statistics`): Spearman and Pearson
correlation of scores with importance (scipy.stats; NaN for constant scores, e.g. a
MoD-tanh router still at its zero init), and precision@k = |kept ∩ top-k by
importance| / k with k = floor(C N) and the kept set chosen as the model chooses it
(`select_tokens`, CLS forced into both sets under cls_policy "keep"). Routing
diagnostics per image (`routing_statistics`): whether CLS is kept, and the Jaccard
overlap |A ∩ B| / |A ∪ B| of the kept sets of consecutive routed blocks.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from amod_bench.routers.select import gather_tokens, scatter_tokens, select_tokens

from . import DEFINITIONS

DEFAULT_MAX_SEQUENCES = 4096  # leave-one-out sequences per batch: (images x N) x N x D activations


@dataclass
class Trace:
    """What one forward pass of a model did on a batch of images."""

    block_inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> (B, N, D) tokens entering it
    scores: dict[int, torch.Tensor] = field(default_factory=dict)  # routed block -> (B, N) router scores
    kept: dict[int, torch.Tensor] = field(default_factory=dict)  # routed block -> (B, k) kept token indices


@torch.no_grad()
def trace(model, images: torch.Tensor, inputs_of=()) -> Trace:
    """Run `model` once on images (B, C, H, W); record its routing scores and kept sets, and the
    tokens entering each block in `inputs_of`."""
    out = Trace()
    handles = []
    for b in inputs_of:
        handles.append(model.blocks[b].register_forward_pre_hook(
            lambda _m, args, b=b: out.block_inputs.__setitem__(b, args[0])))
    for b, block in enumerate(model.blocks):
        if hasattr(block, "router"):
            handles.append(block.router.register_forward_hook(
                lambda _m, _args, scores, b=b: out.scores.__setitem__(b, scores.detach())))
    try:
        _logits, out.kept = model(images, return_routing=True)
    finally:
        for handle in handles:
            handle.remove()
    return out


def _dense_suffix_loss(model, x: torch.Tensor, labels: torch.Tensor, start: int) -> torch.Tensor:
    """Per-sequence loss (S,) of tokens x (S, n, D) run densely through blocks start.. and the head."""
    for block in model.blocks[start:]:
        x = Block.forward(block, x)  # timm's dense block, whatever routing the block was built with
    return F.cross_entropy(model.forward_head(model.norm(x)), labels, reduction="none")


def _all_but_one(num_tokens: int, device) -> torch.Tensor:
    """(N, N-1): row i lists every token index but i, ascending."""
    full = torch.arange(num_tokens, device=device).expand(num_tokens, num_tokens)
    return full[~torch.eye(num_tokens, dtype=torch.bool, device=device)].view(num_tokens, num_tokens - 1)


@torch.no_grad()
def leave_one_out_importance(model, block_input: torch.Tensor, labels: torch.Tensor, block: int,
                             definition: str = "skip", max_sequences: int = DEFAULT_MAX_SEQUENCES) -> torch.Tensor:
    """Importance (B, N) of each token at `block` (module docstring) for a dense `model`.

    Args:
        model: the reference model (its blocks run densely here).
        block_input: (B, N, D) tokens entering `block` in the dense forward.
        labels: (B,) class indices.
        block: the block position.
        definition: "skip" or "remove".
        max_sequences: leave-one-out sequences per batch (images are chunked to fit).
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {list(DEFINITIONS)}, got {definition!r}")
    B, N, _ = block_input.shape
    dense = _dense_suffix_loss(model, block_input, labels, block)  # (B,)
    others = _all_but_one(N, block_input.device)  # (N, N-1)
    per_chunk = max(1, max_sequences // N)
    importance = torch.empty(B, N, dtype=dense.dtype, device=dense.device)
    for i0 in range(0, B, per_chunk):  # a loop over chunks of images, never over tokens
        x = block_input[i0:i0 + per_chunk]
        n = x.shape[0]
        variants = x.repeat_interleave(N, dim=0)  # (n*N, N, D): variant j of image m leaves out token j
        idx = others.repeat(n, 1)  # (n*N, N-1)
        rest = gather_tokens(variants, idx)  # (n*N, N-1, D)
        targets = labels[i0:i0 + n].repeat_interleave(N)
        if definition == "skip":
            after = scatter_tokens(variants, idx, Block.forward(model.blocks[block], rest))
            loss = _dense_suffix_loss(model, after, targets, block + 1)
        else:
            loss = _dense_suffix_loss(model, rest, targets, block)
        importance[i0:i0 + n] = loss.view(n, N) - dense[i0:i0 + n, None]
    if definition == "remove":
        importance[:, : model.num_prefix_tokens] = float("inf")  # the classifier reads the prefix (CLS)
    return importance


def _rows_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of a with the same row of b, (n, T) -> (n,); NaN for a constant row."""
    from scipy import stats

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return stats.pearsonr(a, b, axis=1).statistic


def token_statistics(scores: torch.Tensor, importance: torch.Tensor, k: int | None = None,
                     keep_cls: bool = False) -> dict[str, np.ndarray]:
    """Per image (n,): "spearman", "pearson" of scores (n, N) with importance (n, N) over the tokens
    whose importance is finite, and with k given "precision" (precision@k, module docstring)."""
    from scipy import stats

    scores64, imp64 = scores.double().cpu().numpy(), importance.double().cpu().numpy()
    finite = np.isfinite(imp64).all(axis=0)  # "remove" leaves CLS out (+inf)
    s, i = scores64[:, finite], imp64[:, finite]
    out = {"spearman": _rows_correlation(stats.rankdata(s, axis=1), stats.rankdata(i, axis=1)),
           "pearson": _rows_correlation(s, i)}
    if k is not None:
        kept = select_tokens(scores, k, keep_cls)  # (n, k), as the routed block selects
        top = select_tokens(importance.nan_to_num(nan=-float("inf")), k, keep_cls)
        hits = (kept.unsqueeze(2) == top.unsqueeze(1)).any(dim=2).sum(dim=1)  # (n,)
        out["precision"] = (hits.double() / k).cpu().numpy()
    return out


def routing_statistics(kept: dict[int, torch.Tensor], num_tokens: int) -> dict[int, dict[str, np.ndarray]]:
    """Per routed block, per image (n,): "cls_kept" (0/1) and "jaccard_previous", the Jaccard overlap of
    its kept set with the previous routed block's (NaN for the first routed block)."""
    out, previous = {}, None
    for b in sorted(kept):
        mask = torch.zeros(kept[b].shape[0], num_tokens, dtype=torch.bool)
        mask.scatter_(1, kept[b].cpu(), True)  # (n, N)
        stats = {"cls_kept": mask[:, 0].double().numpy(),
                 "jaccard_previous": np.full(mask.shape[0], np.nan)}
        if previous is not None:
            stats["jaccard_previous"] = ((mask & previous).sum(1) / (mask | previous).sum(1)).double().numpy()
        out[b], previous = stats, mask
    return out
