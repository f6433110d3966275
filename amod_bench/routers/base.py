"""The router interface: score N tokens, optionally weight the kept tokens' update."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Optional

import torch
from torch import nn


class Router(nn.Module, ABC):
    """Scores the N tokens entering one routed block; the block runs on the top-k.

    Subclasses implement `forward` (scores) and `gate` (output weight). What the
    model builder arranges around a router (no router at all, the previous
    block's attention, a truncated depth) is declared once, torch-free, in
    `amod_bench.routers.traits`.

    Args:
        dim: token width d of the block.
        num_heads: attention heads of the block.
        layer_index: 0-indexed block the router sits in.
    """

    name: ClassVar[str]  # set by @register_router
    routes: ClassVar[bool]  # set by @register_router from the router's declared traits
    attention_stat: ClassVar[Optional[str]] = None  # statistic of the previous block's attention it reads

    def __init__(self, *, dim: int, num_heads: int = 1, layer_index: int = 0) -> None:
        super().__init__()
        self.dim, self.num_heads, self.layer_index = dim, num_heads, layer_index

    @abstractmethod
    def forward(self, x: torch.Tensor, attn_stat: Optional[torch.Tensor]) -> torch.Tensor:
        """Routing scores, higher = more likely kept.

        Args:
            x: (B, N, D) tokens entering the routed block.
            attn_stat: (B, N) statistic of the previous block's attention when
                `attention_stat` is set, else None.

        Returns:
            (B, N) scores. Keep them on the autograd graph only if `gate` uses them.
        """

    @abstractmethod
    def gate(self, kept_scores: torch.Tensor) -> Optional[torch.Tensor]:
        """Multiplier of the kept tokens' block update, `x + gate * f(x)`.

        Args:
            kept_scores: (B, k) scores of the kept tokens.

        Returns:
            (B, k) weights, or None for the unweighted `x + f(x)`.
        """

    def attention_probe(self) -> Optional[Callable]:
        """`probe(q, k, v, dropout_p) -> (out, stat)` run by the previous block, or None."""
        return None

    def init_weights(self) -> None:
        """(Re)initialise parameters; timm's ViT init calls this after its own Linear init."""

    def extra_repr(self) -> str:
        return f"dim={self.dim}, layer_index={self.layer_index}"


class NoRouting(Router):
    """Base of registry entries that put no router in any block (dense, isoflop).

    They are registered so every model variant a suite names is a router name;
    the model builder reads their declared traits and never instantiates them
    inside a block.
    """

    def forward(self, x, attn_stat):
        raise RuntimeError(f"router {self.name!r} places no router in any block; nothing to score")

    def gate(self, kept_scores):
        raise RuntimeError(f"router {self.name!r} places no router in any block; nothing to gate")
