"""`dense`: the unrouted model (full depth, every token through every block)."""
from ._registry import register_router
from .base import NoRouting


@register_router("dense")
class Dense(NoRouting):
    """No routing; `capacity` and `routed_layers` are ignored by the model."""
