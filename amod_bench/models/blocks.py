"""Blocks of the routed ViT, injected into timm's VisionTransformer as `block_fn`.

All three subclass timm's `Block` (same submodules, same state_dict keys) and
share one call protocol, so `forward_features` can pass the previous block's
attention statistic to the next router:

    x, attn_stat, kept = block(x, attn_stat)
    # x (B, N, D); attn_stat (B, N) or None; kept (B, k) token indices or None

- `DenseBlock`: timm's block, fused SDPA attention.
- `ScoringBlock`: a dense block whose attention also yields the statistic the
  next block's router reads (only blocks before an attention-scored router).
- `RoutedBlock`: scores -> top-k -> gather -> block on (B, k, D) -> scatter.
"""
from __future__ import annotations

from typing import Callable

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block

from amod_bench.routers.base import Router
from amod_bench.routers.layout import kept_tokens
from amod_bench.routers.select import gather_tokens, scatter_tokens, select_tokens


class ScoringAttention(Attention):
    """timm's Attention plus `forward_with_probe`, which also returns an attention statistic.

    `forward` is timm's (fused SDPA). `forward_with_probe` is the same
    computation with the q, k, v -> output step delegated to a router's probe,
    because SDPA never exposes the probabilities the statistic is made of.
    """

    def forward_with_probe(self, x: torch.Tensor, probe: Callable):
        B, N, C = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, dh)
        q, k = self.q_norm(q), self.k_norm(k)
        x, stat = probe(q, k, v, self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj_drop(self.proj(x))
        return x, stat


class DenseBlock(Block):
    """timm's Block under the (x, attn_stat) -> (x, attn_stat, kept) protocol."""

    def forward(self, x, attn_stat=None):
        return super().forward(x), None, None


class ScoringBlock(Block):
    """Dense block that also hands the next block's router a statistic of its attention.

    Args:
        probe: `probe(q, k, v, dropout_p) -> (out, stat)` from the next router.
        **kwargs: timm `Block` arguments (attn_layer must be ScoringAttention).
    """

    def __init__(self, *, probe: Callable, **kwargs) -> None:
        super().__init__(**kwargs)
        self.probe = probe

    def forward(self, x, attn_stat=None):
        update, stat = self.attn.forward_with_probe(self.norm1(x), self.probe)
        x = x + self.drop_path1(self.ls1(update))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, stat, None


class RoutedBlock(Block):
    """Mixture-of-Depths block: only the top-k tokens run it, the rest pass through.

    Kept tokens attend only among themselves. Skipped tokens are copied
    unchanged (bit-identical). With a router gate w, kept tokens get
    `x + w * f(x)` where f is the block's whole residual update.

    Args:
        router: scores tokens; its `gate` weights the update (or not).
        capacity: fraction C of the N tokens kept, k = max(1, floor(C N)).
        keep_cls: force CLS (token 0) into the kept set.
        **kwargs: timm `Block` arguments.
    """

    def __init__(self, *, router: Router, capacity: float, keep_cls: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.router = router
        self.capacity = capacity
        self.keep_cls = keep_cls

    def forward(self, x, attn_stat=None):
        k = kept_tokens(x.shape[1], self.capacity)  # a Python int: static shapes under torch.compile
        scores = self.router(x, attn_stat)  # (B, N)
        idx = select_tokens(scores, k, self.keep_cls)  # (B, k)
        xk = gather_tokens(x, idx)  # (B, k, D)
        update = self.drop_path1(self.ls1(self.attn(self.norm1(xk))))
        gate = self.router.gate(scores.gather(1, idx))  # (B, k) or None
        if gate is None:  # exactly timm's block on the kept tokens
            xk = xk + update
            xk = xk + self.drop_path2(self.ls2(self.mlp(self.norm2(xk))))
        else:
            update = update + self.drop_path2(self.ls2(self.mlp(self.norm2(xk + update))))
            xk = xk + gate.unsqueeze(-1).to(xk.dtype) * update
        return scatter_tokens(x, idx, xk), None, idx

    def extra_repr(self) -> str:
        return f"capacity={self.capacity}, keep_cls={self.keep_cls}"


def make_block(*, routers: dict, probes: dict, capacity: float, keep_cls: bool, depth: int, **kwargs):
    """timm `block_fn`: picks the block class for block index `depth`."""
    if depth in routers:
        return RoutedBlock(router=routers[depth], capacity=capacity, keep_cls=keep_cls, depth=depth, **kwargs)
    if depth in probes:
        return ScoringBlock(probe=probes[depth], depth=depth, **kwargs)
    return DenseBlock(depth=depth, **kwargs)
