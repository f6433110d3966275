"""Token routers for Mixture-of-Depths ViTs, one small class per file.

    from amod_bench.routers import create_router, list_routers
    list_routers()  # ['amod', 'cls', 'dense', 'isoflop', 'mod', 'mod_tanh', 'random']
    router = create_router("mod", dim=384)

A router turns a block's input (and, for attention-scored routers, the previous
block's attention) into one score per token; the routed block keeps the top-k.
See `base.Router` for the interface and `layout` for capacity / routed-layer rules.

Only `layout` is imported eagerly: it is stdlib-only so the FLOP counter and the
suite validator can use it without torch. Everything else loads on first use.
"""
from . import layout
from ._registry import create_router, get_router_class, list_routers, register_router, router_options

__all__ = [
    "Router", "create_router", "get_router_class", "list_routers", "register_router", "router_options",
    "layout",
]


def __getattr__(name):  # PEP 562: `Router` pulls in torch only when asked for
    if name == "Router":
        from .base import Router
        return Router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
