"""Router registry: `@register_router`, `create_router(name, **kw)`, `list_routers()`.

Names, options and every other trait come from the torch-free declarations in
`traits`; a router's class (and torch) is imported only when it is asked for,
so `list_routers()` and `router_options()` serve the suite validator and the
report without torch.
"""
from __future__ import annotations

import importlib

from .traits import router_names, router_traits

_ROUTERS: dict[str, type] = {}


def register_router(name: str):
    """Class decorator: `name`'s declared router class, built by `create_router(name)`."""
    def decorator(cls):
        traits = router_traits(name)  # undeclared names raise: declare_router(RouterTraits(...)) first
        if name in _ROUTERS and _ROUTERS[name] is not cls:
            raise ValueError(f"router {name!r} is already registered by {_ROUTERS[name].__qualname__}")
        cls.name = name
        cls.routes = traits.routes
        _ROUTERS[name] = cls
        return cls
    return decorator


def list_routers() -> list[str]:
    """Every declared router name, sorted."""
    return router_names()


def get_router_class(name: str) -> type:
    """The class of `name`, importing its module; unknown names raise with the valid list and a suggestion."""
    traits = router_traits(name)
    if name not in _ROUTERS:
        importlib.import_module(traits.module)
    if name not in _ROUTERS:
        raise ValueError(f"router {name!r} is declared in module {traits.module!r}, "
                         f"which has no @register_router({name!r}) class")
    return _ROUTERS[name]


def router_options(name: str) -> list[str]:
    """The keyword-only options a router accepts besides the structural dim/num_heads/layer_index."""
    return list(router_traits(name).options)


def create_router(name: str, *, dim: int, num_heads: int = 1, layer_index: int = 0, **options):
    """Instantiate router `name` for one block of width `dim`.

    Args:
        name: a name from `list_routers()`.
        dim: token width d of the block.
        num_heads: attention heads of the block.
        layer_index: 0-indexed block the router sits in (seeds the random router).
        **options: router-specific options (e.g. `alpha` for mod_tanh, `seed` for
            random, `score_impl` for amod / cls); unknown options raise ValueError.
    """
    unknown = sorted(set(options) - set(router_options(name)))
    if unknown:
        raise ValueError(
            f"router {name!r} got unknown option(s) {unknown}; it accepts {router_options(name)}")
    return get_router_class(name)(dim=dim, num_heads=num_heads, layer_index=layer_index, **options)
