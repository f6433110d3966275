"""Model registry: named ViT configurations and their 4-line builder functions (stdlib only).

A configuration is readable without building the model (or importing torch):
the FLOP counter and the suite validator only need `model_config(name)`.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable, Optional

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)  # DeiT's normalisation (timm.data.IMAGENET_DEFAULT_*)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # timm's augreg ViTs and the small presets


@dataclass(frozen=True)
class ViTConfig:
    """Architecture and input normalisation of one named ViT (timm's VisionTransformer args)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    mean: tuple = IMAGENET_DEFAULT_MEAN
    std: tuple = IMAGENET_DEFAULT_STD
    in_timm: bool = True  # timm has the same name (its pretrained_cfg and hub weights apply)
    crop_pct: float = 0.9  # timm's eval center-crop fraction

    def as_dict(self) -> dict:
        """The public view: architecture, input size, classes, normalisation."""
        d = dataclasses.asdict(self)
        del d["in_timm"], d["crop_pct"]
        return d


_MODELS: dict[str, tuple[ViTConfig, Callable]] = {}


def register_model(config: ViTConfig):
    """Decorator: register a builder function under its own name with `config`."""
    def decorator(fn: Callable) -> Callable:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is already registered")
        _MODELS[fn.__name__] = (config, fn)
        return fn
    return decorator


def _lookup(name: str) -> tuple[ViTConfig, Callable]:
    from . import zoo  # noqa: F401  (registers the built-in models)
    if name not in _MODELS:
        hint = difflib.get_close_matches(str(name), _MODELS, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(_MODELS)}.{did_you_mean}")
    return _MODELS[name]


def list_models(filter: str = "") -> list[str]:
    """Registered model names, sorted; `filter` is an fnmatch pattern such as 'vit_*'."""
    from . import zoo  # noqa: F401
    return sorted(n for n in _MODELS if not filter or fnmatch.fnmatch(n, filter))


def get_config(name: str) -> ViTConfig:
    return _lookup(name)[0]


def model_config(name: str) -> dict:
    """patch_size, embed_dim, depth, num_heads, mlp_ratio, img_size, in_chans, num_classes, mean, std."""
    return get_config(name).as_dict()


def get_model_fn(name: str) -> Callable:
    return _lookup(name)[1]


def timm_name(name: str) -> Optional[str]:
    return name if get_config(name).in_timm else None
