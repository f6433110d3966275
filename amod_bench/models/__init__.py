"""Routed timm ViTs: model registry, presets and the one builder.

    from amod_bench.models import build_model, list_models, model_config
    model = build_model("deit_small_patch16_224", router="amod", capacity=0.125)
    logits, kept = model(images, return_routing=True)  # kept: {block: (B, k) token indices}

`list_models` and `model_config` are stdlib-only (the FLOP counter and the
suite validator use them without torch); `build_model` imports torch / timm.
"""
from __future__ import annotations

from typing import Optional

from ._registry import get_config, list_models, model_config, register_model
from .config import ViTConfig

__all__ = ["build_model", "list_models", "model_config", "register_model", "ViTConfig"]


def build_model(name: str, *, router: str = "dense", capacity: float = 0.5, routed_layers="every_other",
                cls_policy: str = "compete", num_classes: Optional[int] = None, img_size: Optional[int] = None,
                pretrained=None, drop_path_rate: float = 0.0, **router_options):
    """Build a (routed) ViT.

    Args:
        name: a name from `list_models()`.
        router: a name from `amod_bench.routers.list_routers()`; "dense" and
            "isoflop" (dense, truncated to match mod's FLOPs) place no router.
        capacity: fraction C in (0, 1] of the N tokens (CLS counted) a routed
            block keeps: k = max(1, floor(C N)).
        routed_layers: "every_other" (blocks 1, 3, ..., the paper's), "last:K",
            or a list of 0-indexed blocks.
        cls_policy: "compete" (paper) or "keep" (CLS always among the k).
        num_classes: classifier size; default the model's. The head is
            re-initialised when a checkpoint's head has another shape.
        img_size: input size; default the model's. Checkpoint position
            embeddings are resampled by timm.
        pretrained: None (random init), a local timm checkpoint path
            (.safetensors / .pth / .bin; any router variant loads a dense one),
            or "timm" for timm's own hub download (online only).
        drop_path_rate: stochastic depth rate (timm's).
        **router_options: router-specific, e.g. `score_impl="explicit"|"chunked"`
            (amod, cls), `alpha` (mod_tanh), `seed` (random).

    Returns:
        `RoutedVisionTransformer` (a timm `VisionTransformer`).
    """
    get_config(name)  # an unknown name fails before torch and timm are imported
    from .routed_vit import create_routed_vit
    return create_routed_vit(
        name, router=router, capacity=capacity, routed_layers=routed_layers, cls_policy=cls_policy,
        num_classes=num_classes, img_size=img_size, pretrained=pretrained, drop_path_rate=drop_path_rate,
        router_options=router_options)
