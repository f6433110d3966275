"""Token routers for Mixture-of-Depths ViTs, one small class per file.

    from amod_bench.routers import create_router, list_routers
    list_routers()  # ['amod', 'cls', 'dense', 'isoflop', 'mod', 'mod_tanh', 'random']
    router = create_router("mod", dim=384)

A router turns a block's input (and, for attention-scored routers, the previous
block's attention) into one score per token; the routed block keeps the top-k.
See `base.Router` for the interface and `layout` for capacity / routed-layer rules.

Each router is declared once in `traits` (name, module, label, options, costs,
colour). `layout`, `traits` and the registry are stdlib-only, so the FLOP
counter, the suite validator and the report use them without torch; a router's
class loads when it is first asked for.
"""
from . import layout
from ._registry import create_router, get_router_class, list_routers, register_router, router_options
from .traits import RouterTraits, declare_router, router_traits

__all__ = [
    "Router", "RouterTraits", "create_router", "declare_router", "get_router_class", "list_routers",
    "register_router", "router_options", "router_traits", "layout",
]


def __getattr__(name):  # PEP 562: `Router` pulls in torch only when asked for
    if name == "Router":
        from .base import Router
        return Router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
