"""`mod`: Mixture-of-Depths router (Raposo et al., arXiv 2404.02258).

One linear map W_r (d -> 1) per routed block, r = x W_r, top-k on r, and the
kept tokens get `x + r * f(x)`: the multiplication is what puts the router on
the gradient path. Freshly initialised on a pretrained checkpoint it scales
every routed block's update by ~0 (the paper's accuracy collapse).
"""
import torch
from torch import nn

from ._registry import register_router
from .base import Router


@register_router("mod")
class MoDRouter(Router):
    """Linear router d -> 1 (no bias: a bias shifts every score and moves no token)."""

    def __init__(self, *, dim: int, num_heads: int = 1, layer_index: int = 0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, layer_index=layer_index)
        self.weight = nn.Parameter(torch.empty(1, dim))  # state_dict key blocks.{i}.router.weight
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.trunc_normal_(self.weight, std=0.02)  # as timm inits its Linear layers

    def forward(self, x, attn_stat=None):
        return (x @ self.weight.t()).squeeze(-1)  # (B, N)

    def gate(self, kept_scores):
        return kept_scores
