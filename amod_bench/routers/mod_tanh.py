"""`mod_tanh`: zero-initialised MoD router with weight `1 + alpha * tanh(r)` (p-MoD style).

At step 0 every weight is exactly 1, so a pretrained model's kept tokens get
their usual update (the model is unchanged at C=1) while the router still
receives gradients: d gate / d r = alpha at r=0. All scores tie at step 0, so
the first routing decisions are torch.topk's tie-break, the same for every image.
"""
import math

import torch
from torch import nn

from ._registry import register_router
from .base import Router


@register_router("mod_tanh")
class TanhGateRouter(Router):
    """Zero-init linear router d -> 1; kept tokens get `x + (1 + alpha * tanh(r)) * f(x)`.

    Args:
        alpha: gate amplitude; weights stay in (1 - alpha, 1 + alpha).
    """

    def __init__(self, *, dim: int, num_heads: int = 1, layer_index: int = 0, alpha: float = 1.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, layer_index=layer_index)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}")
        self.alpha = float(alpha)
        self.weight = nn.Parameter(torch.zeros(1, dim))

    def init_weights(self) -> None:
        nn.init.zeros_(self.weight)  # the point of this router: identity at step 0

    def forward(self, x, attn_stat=None):
        return (x @ self.weight.t()).squeeze(-1)  # (B, N)

    def gate(self, kept_scores):
        return 1.0 + self.alpha * torch.tanh(kept_scores)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}"
