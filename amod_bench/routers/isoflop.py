"""`isoflop`: the dense model truncated to the first L' blocks (A-MoD paper's baseline).

L' is the depth whose dense FLOPs are nearest those of the MoD-routed model at
the same capacity and routed layers (ties go to the shallower model); see
`amod_bench.flops.isoflop_match` for the rule and the exact FLOP ratio.
"""
from ._registry import register_router
from .base import NoRouting


@register_router("isoflop")
class IsoFlop(NoRouting):
    """No routing; the model keeps only its first L' blocks and loads full-depth checkpoints.

    L' follows its declared `truncate_to_match="mod"` (`amod_bench.routers.traits`).
    """
