"""Router registry: `@register_router`, `create_router(name, **kw)`, `list_routers()`."""
from __future__ import annotations

import difflib
import importlib
import inspect

_ROUTERS: dict[str, type] = {}

# Built-in routers register themselves on import; they are imported on the first
# registry call so that `import amod_bench.routers` (and its torch-free `layout`)
# does not import torch.
_BUILTIN_MODULES = ("dense", "isoflop", "mod", "amod", "mod_tanh", "random_topk", "cls_attention")
_builtins_loaded = False


def register_router(name: str):
    """Class decorator: make a `Router` subclass available as `create_router(name)`."""
    def decorator(cls):
        if name in _ROUTERS and _ROUTERS[name] is not cls:
            raise ValueError(f"router {name!r} is already registered by {_ROUTERS[name].__qualname__}")
        cls.name = name
        _ROUTERS[name] = cls
        return cls
    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(f"{__package__}.{module}")


def list_routers() -> list[str]:
    """Every registered router name, sorted."""
    _load_builtins()
    return sorted(_ROUTERS)


def get_router_class(name: str) -> type:
    """The registered class for `name`; unknown names raise with the valid list and a suggestion."""
    _load_builtins()
    if name not in _ROUTERS:
        hint = difflib.get_close_matches(str(name), _ROUTERS, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown router {name!r}; valid routers: {sorted(_ROUTERS)}.{did_you_mean}")
    return _ROUTERS[name]


def router_options(name: str) -> list[str]:
    """The options a router accepts besides the structural dim/num_heads/layer_index."""
    params = inspect.signature(get_router_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "dim", "num_heads", "layer_index")
            and params[p].kind is inspect.Parameter.KEYWORD_ONLY]


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
    cls = get_router_class(name)
    unknown = sorted(set(options) - set(router_options(name)))
    if unknown:
        raise ValueError(
            f"router {name!r} got unknown option(s) {unknown}; it accepts {router_options(name)}")
    return cls(dim=dim, num_heads=num_heads, layer_index=layer_index, **options)
