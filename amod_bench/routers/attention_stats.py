"""Attention statistics for attention-scored routers, computed in the block before.

`F.scaled_dot_product_attention` never returns the probabilities A_h (N x N,
rows = queries), so the block whose attention feeds a router runs one of two
implementations (router option `score_impl`):

- ``explicit``: softmax attention written out; the statistic reuses the
  probabilities (no extra MACs, but one (B, H, N, N) map is materialised).
- ``chunked``: SDPA (fused) for the output, then a second pass over chunks of
  query rows that recomputes the logits and normalises each row with its own
  log-sum-exp, `r_i = 1/(H N) sum_h sum_j exp(q_j.k_i/sqrt(d) - lse_hj)`:
  only (B, H, chunk, N) is alive at a time, for N^2 d extra MACs per block.

Measured on the 2-core dev CPU (torch 2.14, fp32, DeiT-S A-MoD at C=0.5, median
of interleaved runs on a shared machine): eval batch 16 explicit 5.4 s vs
chunked 7.3 s; train step batch 8 explicit 7.9 s vs chunked 9.9 s. Hence
`explicit` is the default (`layout.DEFAULT_SCORE_IMPL`); `chunked` is for long
sequences or GPUs, where the N x N map is the memory peak.

Both statistics are detached: routing passes no gradient (as in the A-MoD paper).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F

from .base import Router
from .layout import DEFAULT_SCORE_IMPL, check_score_impl

DEFAULT_CHUNK_SIZE = 128  # query rows per chunk: DeiT-S (N=197) takes 2 chunks


def _explicit_attention(q, k, v, dropout_p: float):
    """timm's non-fused attention; returns the output and the detached probabilities."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, N, N)
    attn = attn.softmax(dim=-1)
    out = (F.dropout(attn, dropout_p) if dropout_p > 0 else attn) @ v  # (B, H, N, dh)
    return out, attn.detach()


def received_attention(q, k, v, dropout_p: float = 0.0, *, impl: str = DEFAULT_SCORE_IMPL,
                       chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Attention output and the attention each token receives (A-MoD score).

    Args:
        q, k, v: (B, H, N, dh) after timm's q/k norms.
        dropout_p: attention dropout on the output path (the statistic uses the
            probabilities before dropout).
        impl: "explicit" or "chunked" (module docstring).
        chunk_size: query rows per chunk for impl="chunked".

    Returns:
        out (B, H, N, dh), stat (B, N): column mean of A_h over heads and query
        rows; each row of stat sums to 1.
    """
    if impl == "explicit":
        out, attn = _explicit_attention(q, k, v, dropout_p)
        return out, attn.mean(dim=(1, 2))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return out, _received_chunked(q.detach(), k.detach(), chunk_size)


def _received_chunked(q, k, chunk_size: int):
    B, H, N, dh = q.shape
    q, kt = q * dh ** -0.5, k.transpose(-2, -1)
    total = q.new_zeros(B, H, N)
    # A loop over chunks of query rows (ceil(N / chunk_size) steps, static), not over tokens.
    for start in range(0, N, chunk_size):
        logits = q[:, :, start:start + chunk_size] @ kt  # (B, H, c, N)
        total = total + (logits - logits.logsumexp(dim=-1, keepdim=True)).exp().sum(dim=2)
    return total.mean(dim=1) / N  # (B, N)


def cls_attention(q, k, v, dropout_p: float = 0.0, *, impl: str = DEFAULT_SCORE_IMPL,
                  chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Attention output and the CLS row of attention averaged over heads (EViT score).

    Same arguments as `received_attention`; stat (B, N) is mean_h A_h[0, :].
    The chunked path needs one query row only, so `chunk_size` is unused there.
    """
    if impl == "explicit":
        out, attn = _explicit_attention(q, k, v, dropout_p)
        return out, attn[:, :, 0].mean(dim=1)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    q0, k = q[:, :, :1].detach(), k.detach()
    logits = (q0 * q0.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, 1, N)
    return out, logits.softmax(dim=-1).mean(dim=1).squeeze(1)


ATTENTION_STATS = {"received": received_attention, "cls": cls_attention}


class AttentionRouter(Router):
    """Parameter-free router whose score is a statistic of the previous block's attention.

    Subclasses set `attention_stat` (a key of ATTENTION_STATS). Top-k on that
    statistic, no output weighting, no gradient through routing.

    Args:
        score_impl: "explicit" (reuse softmax probabilities) or "chunked"
            (SDPA + log-sum-exp second pass); see module docstring.
        chunk_size: query rows per chunk for score_impl="chunked".
    """

    attention_stat = "received"

    def __init__(self, *, dim: int, num_heads: int = 1, layer_index: int = 0,
                 score_impl: str = DEFAULT_SCORE_IMPL, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(dim=dim, num_heads=num_heads, layer_index=layer_index)
        self.score_impl = check_score_impl(score_impl)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size

    def forward(self, x, attn_stat: Optional[torch.Tensor]) -> torch.Tensor:
        return attn_stat  # already (B, N) and detached by the probe

    def gate(self, kept_scores):
        return None  # the paper's ablation: scaling f(x) by the score hurts

    def attention_probe(self):
        return partial(ATTENTION_STATS[self.attention_stat], impl=self.score_impl, chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, score_impl={self.score_impl!r}"
