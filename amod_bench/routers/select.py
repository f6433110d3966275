"""Batched, static-shape token selection: top-k -> gather -> (block) -> scatter.

No loop over images or tokens, and k depends only on N and C, so the routed
block traces to one static graph under torch.compile.

Gather and scatter index rows of the batch flattened to (B*N, D):
`index_select` / `index_copy` move whole contiguous rows of D values, where
`gather` / `scatter` along dim 1 with an index expanded to (B, k, D) address
every element, which is slower (docs/DECISIONS.md).
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


def _flat_rows(idx: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, k) token indices -> (B*k,) row indices into the batch flattened to (B*N, D)."""
    offsets = torch.arange(idx.shape[0], device=idx.device, dtype=idx.dtype).unsqueeze(1) * num_tokens
    return (idx + offsets).reshape(-1)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, k) -> (B, k, D)."""
    B, N, D = x.shape
    return x.reshape(B * N, D).index_select(0, _flat_rows(idx, N)).view(B, idx.shape[1], D)


def scatter_tokens(x: torch.Tensor, idx: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Copy of x (B, N, D) with rows idx (B, k) replaced by kept (B, k, D); other rows untouched."""
    B, N, D = x.shape
    rows = kept.reshape(B * idx.shape[1], D)
    return x.reshape(B * N, D).index_copy(0, _flat_rows(idx, N), rows).view(B, N, D)
