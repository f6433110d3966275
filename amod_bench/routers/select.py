"""Batched, static-shape token selection: top-k -> gather -> (block) -> scatter.

No loop over images or tokens, and k depends only on N and C, so the routed
block traces to one static graph under torch.compile.
"""
from __future__ import annotations

import torch


def select_tokens(scores: torch.Tensor, k: int, keep_cls: bool = False) -> torch.Tensor:
    """Indices of the k highest-scoring tokens per image, ascending.

    Args:
        scores: (B, N) routing scores; token 0 is CLS.
        k: tokens to keep, 1 <= k <= N.
        keep_cls: force CLS into the kept set (cls_policy="keep").

    Returns:
        (B, k) int64 token indices, sorted so that C=1 is the identity permutation.
    """
    scores = scores.detach()  # indices carry no gradient; routers that need one use `gate`
    if keep_cls:
        scores = torch.cat([torch.full_like(scores[:, :1], float("inf")), scores[:, 1:]], dim=1)
    idx = scores.topk(k, dim=1, sorted=False).indices
    return idx.sort(dim=1).values


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, k) -> (B, k, D)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(x: torch.Tensor, idx: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Copy of x (B, N, D) with rows idx (B, k) replaced by kept (B, k, D); other rows untouched."""
    return x.scatter(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]), kept)
