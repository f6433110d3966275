"""What a cell costs, derived once from its configuration: parameters, inference MACs per
image, training MACs per sample, and the FLOP ratio to its full-depth dense partner.

`bench.py plan` prints these and the runner writes them into each cell's config.json, so
the report can compare isoFLOP pairs from files alone. Parameters are counted on a model
built on the `meta` device: instant even for ViT-L, and no weights are allocated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

from amod_bench.suite.cell import CellConfig


@lru_cache(maxsize=None)
def _params(model: str, router: str, capacity: float, routed_layers: str, cls_policy: str,
            num_classes: int, img_size: int, router_options: tuple) -> int:
    import torch

    from amod_bench.models import build_model

    with torch.device("meta"):
        net = build_model(model, router=router, capacity=capacity, routed_layers=routed_layers,
                          cls_policy=cls_policy, num_classes=num_classes, img_size=img_size,
                          **dict(router_options))
    return sum(p.numel() for p in net.parameters())


@dataclass(frozen=True)
class CellCosts:
    """A cell's derived figures: what `plan` prints and the runner writes beside the config."""

    params: int
    gmacs: float  # inference MACs per image / 1e9
    train_macs_per_sample: float  # forward + backward MACs per training image
    flop_ratio_dense: float  # gmacs / gmacs of the full-depth dense model
    img_size: int  # the input resolution the cell trains at (the recipe's, else the model's)
    mean: tuple[float, ...]  # the model's input normalisation
    std: tuple[float, ...]
    num_classes: int  # the dataset's where it resolves, else the model's

    def as_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def cell_costs(config: CellConfig, num_classes: int | None = None) -> CellCosts:
    """The derived figures of a cell config; `num_classes` from the dataset when it resolves,
    else the model's default."""
    from amod_bench import flops
    from amod_bench.models import model_config

    model = model_config(config.model)
    img_size = config.recipe.img_size or model["img_size"]
    if num_classes is None:
        num_classes = _dataset_classes(config.dataset_path) or model["num_classes"]
    routed_layers = config.routed_layers
    arch = dict(router=config.router, capacity=config.capacity, routed_layers=routed_layers,
                cls_policy=config.cls_policy, img_size=img_size, num_classes=num_classes)
    macs = flops.count_macs(config.model, **arch, **config.router_options)
    dense = flops.count_macs(config.model, **{**arch, "router": "dense", "capacity": 1.0})
    # Capacity changes the parameter count only through isoflop's depth: keep it out of the
    # cache key otherwise, so a capacity sweep builds each architecture once.
    params_capacity = config.capacity if config.router == "isoflop" else 1.0
    return CellCosts(
        params=_params(config.model, router=config.router, capacity=params_capacity,
                       routed_layers=routed_layers, cls_policy=config.cls_policy,
                       num_classes=num_classes, img_size=img_size,
                       router_options=tuple(sorted(config.router_options.items()))),
        gmacs=macs.total / 1e9,
        train_macs_per_sample=flops.train_macs_per_sample(config.model, **arch, **config.router_options),
        flop_ratio_dense=macs.total / dense.total,
        img_size=img_size, mean=tuple(model["mean"]), std=tuple(model["std"]), num_classes=num_classes)


def _dataset_classes(dataset_path: str) -> int | None:
    from amod_bench.data import missing_dataset_message, open_dataset

    if missing_dataset_message(dataset_path) is not None:
        return None
    return open_dataset(dataset_path).num_classes
