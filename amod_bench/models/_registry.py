"""Model registry: named ViT configurations (stdlib only).

A configuration is readable without building the model (or importing torch):
the FLOP counter and the suite validator only need `model_config(name)`. The
dependency is one-way: the FLOP counter reads this registry, the model builder
reads the FLOP counter, and nothing here imports either.
"""
from __future__ import annotations

import difflib
import fnmatch

from .config import ViTConfig
from .zoo import BUILTIN_MODELS

_MODELS: dict[str, ViTConfig] = dict(BUILTIN_MODELS)


def register_model(name: str, config: ViTConfig) -> None:
    """Make `build_model(name)` build a ViT of `config` (names are unique)."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = config


def list_models(filter: str = "") -> list[str]:
    """Registered model names, sorted; `filter` is an fnmatch pattern such as 'vit_*'."""
    return sorted(n for n in _MODELS if not filter or fnmatch.fnmatch(n, filter))


def get_config(name: str) -> ViTConfig:
    """The configuration of `name`; unknown names raise with the valid list and a suggestion."""
    if name not in _MODELS:
        hint = difflib.get_close_matches(str(name), _MODELS, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(_MODELS)}.{did_you_mean}")
    return _MODELS[name]


def model_config(name: str) -> dict:
    """patch_size, embed_dim, depth, num_heads, mlp_ratio, img_size, in_chans, num_classes, mean, std."""
    return get_config(name).as_dict()
