"""The named models: timm's DeiT / ViT configurations and small CPU presets.

Each entry is timm-style: a 4-line function whose name is the model name, its
configuration in the decorator. The bodies import torch only when called.

Presets (mean/std 0.5, 10 classes) train on a 2-core CPU in seconds; few tokens
train best there:
    vit_nano_patch7_28    28 px, 16 patches + CLS, width 64, depth 6  (MNIST / digits)
    vit_nano_patch4_28    28 px, 49 patches + CLS, width 96, depth 6
    vit_micro_patch4_32   32 px, 64 patches + CLS, width 128, depth 8 (CIFAR-sized)
"""
from ._registry import HALF, ViTConfig, register_model

_PRESET = dict(mean=HALF, std=HALF, num_classes=10, in_timm=False, crop_pct=1.0)


def _create(name: str, **kwargs):
    from .routed_vit import create_routed_vit  # torch / timm only when a model is built
    return create_routed_vit(name, **kwargs)


@register_model(ViTConfig(patch_size=16, embed_dim=192, depth=12, num_heads=3))
def deit_tiny_patch16_224(**kwargs):
    """DeiT-Ti/16 (Touvron et al., arXiv 2012.12877), timm's configuration."""
    return _create("deit_tiny_patch16_224", **kwargs)


@register_model(ViTConfig(patch_size=16, embed_dim=384, depth=12, num_heads=6))
def deit_small_patch16_224(**kwargs):
    """DeiT-S/16, timm's configuration; about 4.6 GMACs at 224 px."""
    return _create("deit_small_patch16_224", **kwargs)


@register_model(ViTConfig(patch_size=16, embed_dim=768, depth=12, num_heads=12, mean=HALF, std=HALF))
def vit_base_patch16_224(**kwargs):
    """ViT-B/16 (Dosovitskiy et al., arXiv 2010.11929), timm's configuration."""
    return _create("vit_base_patch16_224", **kwargs)


@register_model(ViTConfig(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mean=HALF, std=HALF))
def vit_large_patch16_224(**kwargs):
    """ViT-L/16, timm's configuration."""
    return _create("vit_large_patch16_224", **kwargs)


@register_model(ViTConfig(patch_size=7, embed_dim=64, depth=6, num_heads=2, img_size=28, **_PRESET))
def vit_nano_patch7_28(**kwargs):
    """28 px, 4x4 patches of 7 px: 17 tokens. The quickstart's MNIST -> digits model."""
    return _create("vit_nano_patch7_28", **kwargs)


@register_model(ViTConfig(patch_size=4, embed_dim=96, depth=6, num_heads=3, img_size=28, **_PRESET))
def vit_nano_patch4_28(**kwargs):
    """28 px, 7x7 patches of 4 px: 50 tokens."""
    return _create("vit_nano_patch4_28", **kwargs)


@register_model(ViTConfig(patch_size=4, embed_dim=128, depth=8, num_heads=4, img_size=32, **_PRESET))
def vit_micro_patch4_32(**kwargs):
    """32 px, 8x8 patches of 4 px: 65 tokens."""
    return _create("vit_micro_patch4_32", **kwargs)
