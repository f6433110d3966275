"""What a cell costs, derived once from its configuration: parameters, inference MACs per
image, training MACs per sample, and the FLOP ratio to its full-depth dense partner.

`bench.py plan` prints these and the runner writes them into each cell's config.json, so
the report can compare isoFLOP pairs from files alone. Parameters are counted on a model
built on the `meta` device: instant even for ViT-L, and no weights are allocated.
"""
from __future__ import annotations

from functools import lru_cache


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


def cell_costs(config: dict, num_classes: int | None = None) -> dict:
    """Derived figures for a resolved cell config: `params`, `gmacs`, `train_macs_per_sample`,
    `flop_ratio_dense`, plus the model's input contract (`img_size`, `mean`, `std`) and
    `num_classes` (from the dataset when it resolves, else the model's default)."""
    from amod_bench import flops
    from amod_bench.models import model_config

    model = model_config(config["model"])
    img_size = config.get("img_size") or model["img_size"]
    if num_classes is None:
        num_classes = _dataset_classes(config) or model["num_classes"]
    routed_layers = config["routed_layers"]
    routed_layers = routed_layers if isinstance(routed_layers, str) else tuple(routed_layers)
    router_options = config.get("router_options") or {}
    arch = dict(router=config["router"], capacity=config["capacity"], routed_layers=routed_layers,
                cls_policy=config["cls_policy"], img_size=img_size, num_classes=num_classes)
    macs = flops.count_macs(config["model"], **arch, **router_options)
    dense = flops.count_macs(config["model"], **{**arch, "router": "dense", "capacity": 1.0})
    # Capacity changes the parameter count only through isoflop's depth: keep it out of the
    # cache key otherwise, so a capacity sweep builds each architecture once.
    params_capacity = config["capacity"] if config["router"] == "isoflop" else 1.0
    return {
        "params": _params(config["model"], router=config["router"], capacity=params_capacity,
                          routed_layers=routed_layers, cls_policy=config["cls_policy"],
                          num_classes=num_classes, img_size=img_size,
                          router_options=tuple(sorted(router_options.items()))),
        "gmacs": macs.total / 1e9,
        "train_macs_per_sample": flops.train_macs_per_sample(config["model"], **arch, **router_options),
        "flop_ratio_dense": macs.total / dense.total,
        "img_size": img_size, "mean": list(model["mean"]), "std": list(model["std"]),
        "num_classes": num_classes,
    }


def _dataset_classes(config: dict) -> int | None:
    from amod_bench.data import missing_dataset_message, open_dataset

    if missing_dataset_message(config["dataset_path"]) is not None:
        return None
    return open_dataset(config["dataset_path"]).num_classes
