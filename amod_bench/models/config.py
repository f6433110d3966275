"""`ViTConfig`: the architecture and input normalisation of one named ViT (stdlib only)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
