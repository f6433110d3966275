"""What each router is, declared once (stdlib only): name, module, label, costs, options, colour.

Every consumer reads these declarations: the registry (which module to import,
which options a router accepts), the FLOP counter (score MACs, isoflop depth),
the model builder, the perf benchmark, the suite validator and the report
(order, display names, colours). The report and the FLOP counter must not
import torch, so nothing here does; a router's class is imported only when the
router is built.

Adding a router: one file with a `@register_router("name")` class and one
`declare_router(RouterTraits(...))` line (here for the built-ins, or in any
module imported before the router is used).

    >>> router_traits("amod").label
    'A-MoD'
    >>> [t.name for t in routers_in_display_order()][:3]
    ['dense', 'isoflop', 'mod']
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping, Optional

# (N tokens, width d, score_impl) -> MACs of scoring the N tokens in one routed block
ScoreMacs = Callable[[int, int, str], int]


def no_score_macs(n: int, d: int, impl: str) -> int:
    """Scores that cost no multiply-accumulates (random draws, or no router at all)."""
    return 0


def linear_score_macs(n: int, d: int, impl: str) -> int:
    """A d -> 1 linear map per token (mod, mod_tanh)."""
    return n * d


def received_score_macs(n: int, d: int, impl: str) -> int:
    """Attention received: free off the explicit softmax; q.k recomputed for every pair when chunked."""
    return 0 if impl == "explicit" else n * n * d


def cls_row_score_macs(n: int, d: int, impl: str) -> int:
    """The CLS attention row: free off the explicit softmax; one query row recomputed when chunked."""
    return 0 if impl == "explicit" else n * d


@dataclass(frozen=True)
class RouterTraits:
    """The declaration of one router; `declare_router` makes it known to every consumer."""

    name: str  # registry name, e.g. "amod"
    module: str  # module that implements it, imported when the router is first built
    label: str  # display name in the report, e.g. "A-MoD"
    routes: bool  # False: a model variant that places no router (dense, isoflop)
    reads_attention: bool = False  # scores with the previous block's attention statistic
    learns: bool = False  # has parameters of its own, trained from a fresh initialisation (mod, mod_tanh)
    truncate_to_match: Optional[str] = None  # isoflop: cut depth to match this router's FLOPs
    # keyword-only constructor options -> their type annotation (float, int, bool, Literal[...])
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    colour: Optional[str] = None  # report colour (hex); None: the report picks a spare palette colour
    score_macs: ScoreMacs = no_score_macs  # extra MACs of scoring the tokens, per routed block

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))  # frozen all the way down
        if self.reads_attention and not self.routes:
            raise ValueError(f"router {self.name!r}: reads_attention needs routes=True")
        if self.learns and not self.routes:
            raise ValueError(f"router {self.name!r}: learns needs routes=True")
        if self.truncate_to_match is not None and self.routes:
            raise ValueError(f"router {self.name!r}: truncate_to_match is for variants with routes=False")

    def __reduce__(self):  # a mappingproxy does not pickle: rebuild from a plain dict
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return _rebuild, (values | {"options": dict(self.options)},)


def _rebuild(values: dict) -> RouterTraits:
    return RouterTraits(**values)


_DECLARED: dict[str, RouterTraits] = {}  # insertion order is the display order


def declare_router(traits: RouterTraits) -> RouterTraits:
    """Make a router known by name; declaring the same name again with other traits raises ValueError."""
    known = _DECLARED.get(traits.name)
    if known is not None and known != traits:
        raise ValueError(f"router {traits.name!r} is already declared with other traits: {known}")
    _DECLARED[traits.name] = traits
    return traits


def router_traits(name: str) -> RouterTraits:
    """The declaration of `name`; unknown names raise with the valid list and a suggestion."""
    if name not in _DECLARED:
        hint = difflib.get_close_matches(str(name), _DECLARED, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown router {name!r}; valid routers: {router_names()}.{did_you_mean}")
    return _DECLARED[name]


def router_names() -> list[str]:
    """Every declared router name, sorted."""
    return sorted(_DECLARED)


def routers_in_display_order() -> list[RouterTraits]:
    """Every declaration in the order declared, which is the report's order."""
    return list(_DECLARED.values())


_SPARE_COLOURS = ("#cc78bc", "#de8f05", "#fbafe4", "#ece133")  # routers declared without a colour


def router_colour(name: str) -> str:
    """The colour of `name` in every figure (report and perf): its declared colour, else a spare one
    picked from its name (stable across runs; undeclared names too)."""
    colour = _DECLARED[name].colour if name in _DECLARED else None
    return colour or _SPARE_COLOURS[sum(map(ord, name)) % len(_SPARE_COLOURS)]


_SCORE_OPTIONS = {"score_impl": Literal["explicit", "chunked"], "chunk_size": int}  # attention-scored routers

# The built-ins, in the report's order; colours are seaborn "colorblind" hues.
declare_router(RouterTraits("dense", "amod_bench.routers.dense", "dense", routes=False, colour="#333333"))
declare_router(RouterTraits("isoflop", "amod_bench.routers.isoflop", "isoFLOP", routes=False,
                            truncate_to_match="mod", colour="#949494"))
declare_router(RouterTraits("mod", "amod_bench.routers.mod", "MoD", routes=True, learns=True, colour="#0173b2",
                            score_macs=linear_score_macs))
declare_router(RouterTraits("amod", "amod_bench.routers.amod", "A-MoD", routes=True, reads_attention=True,
                            options=_SCORE_OPTIONS, colour="#d55e00", score_macs=received_score_macs))
declare_router(RouterTraits("mod_tanh", "amod_bench.routers.mod_tanh", "MoD-tanh", routes=True, learns=True,
                            options={"alpha": float}, colour="#56b4e9", score_macs=linear_score_macs))
declare_router(RouterTraits("random", "amod_bench.routers.random_topk", "random", routes=True,
                            options={"seed": int}, colour="#ca9161"))
declare_router(RouterTraits("cls", "amod_bench.routers.cls_attention", "CLS-attention", routes=True,
                            reads_attention=True, options=_SCORE_OPTIONS, colour="#029e73",
                            score_macs=cls_row_score_macs))
