"""Attention statistics for attention-scored routers, computed in the block before.

`F.scaled_dot_product_attention` never returns the probabilities A_h (N x N,
rows = queries), so the block whose attention feeds a router runs one of two
implementations (router option `score_impl`):

- ``explicit``: softmax attention written out in the forward, one chunk of
  `chunk_size` query rows at a time; the statistic is read off each chunk's
  probabilities (no extra MACs) and the chunk is dropped. The backward is the
  fused kernel's (`_ExplicitAttention`): it gets q, k, v, the output and each
  row's log-sum-exp, exactly what SDPA saves, so no (B, H, N, N) map outlives
  its chunk and the block costs what a dense SDPA block costs, plus a softmax
  written out instead of fused.
- ``chunked``: SDPA (fused) for the output, then a second pass over chunks of
  query rows that recomputes the logits and normalises each row,
  `r_i = 1/(H N) sum_h sum_j exp(q_j.k_i/sqrt(d) - lse_hj)`: only
  (B, H, chunk, N) is alive at a time, for N^2 d extra MACs per block.

Both are faster than the former paths (the former explicit one kept the map
for an autograd backward); the timings are in docs/DECISIONS.md, whole models
in `bench.py perf` and benchmarks/RESULTS.md. With 2 torch threads
on a loaded 2-core machine every op waits for a descheduled thread, which makes
op-heavy paths look fast or slow at random; compare at 1 thread there.

Dropout on the attention probabilities (dropout_p > 0) cannot be replayed by
the fused backward, so ``explicit`` then falls back to plain autograd through
the written-out softmax (the map is kept, as before).

Both statistics are detached: routing passes no gradient (as in the A-MoD paper).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F

from .base import Router
from .layout import DEFAULT_SCORE_IMPL, check_score_impl

DEFAULT_CHUNK_SIZE = 256  # query rows per chunk: one chunk at 224 px (N=197), 3 at 384 px, 5 at 512 px
_CPU_BLOCK_ELEMENTS = 1 << 18  # 1 MiB of float32 logits per block: L2-sized (docs/DECISIONS.md)
_CPU_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _explicit_attention(q, k, v, dropout_p: float):
    """timm's non-fused attention; returns the output and the detached probabilities (B, H, N, N)."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, N, N)
    attn = attn.softmax(dim=-1)
    out = (F.dropout(attn, dropout_p) if dropout_p > 0 else attn) @ v  # (B, H, N, dh)
    return out, attn.detach()


def _chunks(q3, kt3, scale: float, chunk_size: int):
    """Yield (heads, rows, e, m, z) per block of (batch x head) slices and query rows.

    q3 (BH, N, dh), kt3 (BH, dh, N). `heads` and `rows` are slices of BH and of the
    N query rows; e = exp(logits - row max), unnormalised, float32 (h, c, N); m and
    z (h, c, 1) are the row max and sum of e, so the probabilities are e / z and the
    row log-sum-exp is m + log z. Only this (h, c, N) block is alive at a time. On
    CPU, h is chosen so that the block stays cache-sized (_CPU_BLOCK_ELEMENTS): the
    max, exp, sum and two products then re-read it from cache, not from memory.
    """
    bh, n = q3.shape[0], q3.shape[1]
    rows = min(n, chunk_size)
    group = max(1, _CPU_BLOCK_ELEMENTS // (rows * n)) if q3.device.type == "cpu" else bh
    for b0 in range(0, bh, group):
        heads = slice(b0, min(bh, b0 + group))
        for r0 in range(0, n, rows):
            rows_ = slice(r0, min(n, r0 + rows))
            e = torch.bmm(q3[heads, rows_], kt3[heads]).float().mul_(scale)  # (h, c, N); in place: no copy
            m = e.amax(dim=-1, keepdim=True)
            e.sub_(m).exp_()
            yield heads, rows_, e, m, e.sum(dim=-1, keepdim=True)


def _flat(t):
    """(B, H, N, dh) -> (B*H, N, dh); a copy only when t is a strided view (q, k, v of timm's qkv)."""
    return t.reshape(-1, t.shape[-2], t.shape[-1])


class _ExplicitAttention(torch.autograd.Function):
    """Softmax attention written out chunk by chunk, with the fused kernel's backward.

    Forward: out = softmax(q k^T / sqrt(dh)) v and the statistic (`stat`:
    "received" -> column mean over heads and query rows; "cls" -> row 0 averaged
    over heads), read off each chunk's probabilities. Saved for backward: q, k,
    v, out and the row log-sum-exp, as SDPA saves them. Backward: on CPU the
    flash kernel's own backward op (what SDPA's backward runs); elsewhere SDPA is
    recomputed and differentiated (one extra fused forward, no N x N map).
    """

    @staticmethod
    def forward(ctx, q, k, v, stat: str, chunk_size: int):
        B, H, N, dh = q.shape
        scale = dh ** -0.5
        q3, kt3, v3 = _flat(q), _flat(k).transpose(1, 2), _flat(v)  # (BH, N, dh), (BH, dh, N), (BH, N, dh)
        out = v3.new_empty(B * H, N, dh)
        lse = q3.new_empty(B * H, N, dtype=torch.float32)
        received = q3.new_zeros(B * H, 1, N, dtype=torch.float32) if stat == "received" else None
        cls_row = q3.new_empty(B * H, 1, N, dtype=torch.float32) if received is None else None
        for heads, rows, e, m, z in _chunks(q3, kt3, scale, chunk_size):
            inv_z = z.reciprocal()  # (h, c, 1)
            # normalise the (c, dh) product rather than the (c, N) map: fewer elements
            torch.mul(torch.bmm(e.to(v3.dtype), v3[heads]), inv_z.to(v3.dtype), out=out[heads, rows])
            lse[heads, rows] = (m + z.log()).squeeze(-1)
            if received is not None:  # column sums of e / z as one (1, c) @ (c, N) product per head
                received[heads].baddbmm_(inv_z.transpose(1, 2), e)
            elif rows.start == 0:
                cls_row[heads] = e[:, :1] * inv_z[:, :1]
        out, lse = out.view(B, H, N, dh), lse.view(B, H, N)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        if received is not None:
            value = (received.view(B, H, N).mean(dim=1) / N).to(q.dtype)
        else:
            value = cls_row.view(B, H, N).mean(dim=1).to(q.dtype)
        ctx.mark_non_differentiable(value)
        return out, value

    @staticmethod
    def backward(ctx, grad_out, grad_stat):
        q, k, v, out, lse = ctx.saved_tensors
        if q.device.type == "cpu" and q.dtype in _CPU_FLASH_DTYPES:
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad_out, q, k, v, out, lse, 0.0, False, scale=ctx.scale)
        else:
            dq, dk, dv = _sdpa_recompute_backward(q, k, v, grad_out)
        return dq, dk, dv, None, None


def _sdpa_recompute_backward(q, k, v, grad_out):
    """Gradients of SDPA(q, k, v) for grad_out, by recomputing the fused forward (any device)."""
    with torch.enable_grad():
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return torch.autograd.grad(out, (q, k, v), grad_out)


def _explicit(q, k, v, dropout_p: float, stat: str, chunk_size: int):
    if dropout_p > 0:  # the fused backward cannot replay the dropout mask: plain autograd, map kept
        out, attn = _explicit_attention(q, k, v, dropout_p)
        return out, attn.mean(dim=(1, 2)) if stat == "received" else attn[:, :, 0].mean(dim=1)
    return _ExplicitAttention.apply(q, k, v, stat, chunk_size)


def received_attention(q, k, v, dropout_p: float = 0.0, *, impl: str = DEFAULT_SCORE_IMPL,
                       chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Attention output and the attention each token receives (A-MoD score).

    Args:
        q, k, v: (B, H, N, dh) after timm's q/k norms.
        dropout_p: attention dropout on the output path (the statistic uses the
            probabilities before dropout).
        impl: "explicit" or "chunked" (module docstring).
        chunk_size: query rows per chunk (both impls).

    Returns:
        out (B, H, N, dh), stat (B, N): column mean of A_h over heads and query
        rows; each row of stat sums to 1.
    """
    if impl == "explicit":
        return _explicit(q, k, v, dropout_p, "received", chunk_size)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return out, _received_chunked(q.detach(), k.detach(), chunk_size)


@torch.no_grad()
def _received_chunked(q, k, chunk_size: int):
    B, H, N, dh = q.shape
    total = q.new_zeros(B * H, 1, N, dtype=torch.float32)
    # A loop over chunks of query rows (ceil(N / chunk_size) steps, static), not over tokens.
    for heads, _, e, _, z in _chunks(_flat(q), _flat(k).transpose(1, 2), dh ** -0.5, chunk_size):
        total[heads].baddbmm_(z.reciprocal().transpose(1, 2), e)  # column sums of e / z
    return (total.view(B, H, N).mean(dim=1) / N).to(q.dtype)  # (B, N)


def cls_attention(q, k, v, dropout_p: float = 0.0, *, impl: str = DEFAULT_SCORE_IMPL,
                  chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Attention output and the CLS row of attention averaged over heads (EViT score).

    Same arguments as `received_attention`; stat (B, N) is mean_h A_h[0, :].
    The chunked path needs one query row only, so `chunk_size` is unused there.
    """
    if impl == "explicit":
        return _explicit(q, k, v, dropout_p, "cls", chunk_size)
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
        chunk_size: query rows per chunk of either score_impl (bounds the
            transient (B, H, chunk, N) buffer).
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
