"""What is benchmarked: the model configurations, their weights, inputs, FLOPs and row identity."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from amod_bench.routers.traits import router_traits, routers_in_display_order


def scored(router: str) -> bool:
    """Whether `router` has a `score_impl` option (amod, cls): its score paths are timed apart."""
    return "score_impl" in router_traits(router).options


def declared_routers() -> tuple[str, ...]:
    """The default benchmark: every router declared so far, in the report's order."""
    return tuple(t.name for t in routers_in_display_order())


@dataclass(frozen=True)
class Variant:
    """One model configuration to benchmark."""

    router: str
    capacity: Optional[float]  # None for dense (it routes nothing)
    score_impl: Optional[str] = None  # amod / cls only; None: the model's default

    @property
    def label(self) -> str:
        parts = [self.router] + ([f"C={self.capacity:g}"] if self.capacity is not None else [])
        return " ".join(parts + ([self.score_impl] if self.score_impl else []))

    def build_kwargs(self) -> dict:
        kw = {"router": self.router}
        if self.capacity is not None:
            kw["capacity"] = self.capacity
        if self.score_impl:
            kw["score_impl"] = self.score_impl
        return kw


DENSE = Variant("dense", None)


def variants(routers, capacities, score_impls) -> list[Variant]:
    """Every router at every capacity (dense once), each score impl of amod/cls; dense always first."""
    out = []
    for router in routers:
        if router == "dense":
            out.append(DENSE)
            continue
        for c in capacities:
            impls = score_impls if (scored(router) and score_impls) else [None]
            out += [Variant(router, c, impl) for impl in impls]
    if DENSE not in out:
        out.insert(0, DENSE)  # every ratio is to dense
    return out


def mod_partner(v: Variant) -> Variant:
    """The MoD configuration a variant is compared with (`*_over_mod`)."""
    return Variant("mod", v.capacity)


def has_mod_partner(v: Variant) -> bool:
    return v.router not in ("dense", "mod")


def default_impl() -> str:
    from amod_bench.routers.layout import DEFAULT_SCORE_IMPL
    return DEFAULT_SCORE_IMPL


def macs(model_name: str, v: Variant, img_size: int, num_classes: int) -> tuple[float, float]:
    """(GMACs per image, FLOP ratio to dense) from the analytic counter."""
    from amod_bench import flops
    opts = {"score_impl": v.score_impl} if v.score_impl else {}
    dense = flops.count_macs(model_name, img_size=img_size, num_classes=num_classes).total
    if v.router == "dense":
        return dense / 1e9, 1.0
    total = flops.count_macs(model_name, router=v.router, capacity=v.capacity, img_size=img_size,
                             num_classes=num_classes, **opts).total
    return total / 1e9, total / dense


def build(model_name: str, v: Variant, img_size: int, device, seed: int):
    """The model of `v`, seeded: the same seed gives every router the same backbone weights."""
    import torch
    from amod_bench.models import build_model
    torch.manual_seed(seed)
    return build_model(model_name, img_size=img_size, **v.build_kwargs()).to(device)


def inputs(img_size: int, batch: int, num_classes: int, device, seed: int):
    """A synthetic batch: images (B, 3, img_size, img_size) ~ N(0, 1), labels (B,)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, img_size, img_size, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    return x, y


def row_base(model_name: str, v: Variant, img_size: int, batch: int, device, dtype_name: str, kind: str) -> dict:
    """The identity columns every row starts with."""
    from amod_bench.models import model_config
    from amod_bench.routers.layout import kept_tokens
    cfg = model_config(model_name)
    tokens = (img_size // cfg["patch_size"]) ** 2 + 1
    return {"kind": kind, "model": model_name, "router": v.router, "capacity": v.capacity,
            "score_impl": v.score_impl or (default_impl() if scored(v.router) else None),
            "img_size": img_size, "tokens": tokens,
            "kept_tokens": kept_tokens(tokens, v.capacity) if v.capacity is not None and v.router != "isoflop"
            else None, "batch_size": batch, "device": str(device), "dtype": dtype_name, "error": None}
