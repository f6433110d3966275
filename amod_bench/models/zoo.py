"""The built-in models: timm's DeiT / ViT configurations and small CPU presets (stdlib only).

One entry per model, its name timm's where `in_timm` (timm's pretrained_cfg and
hub weights apply). Every model is built by the one builder,
`amod_bench.models.build_model`, so declaring a model never imports torch.

Presets (mean/std 0.5, 10 classes) train on a 2-core CPU in seconds; few tokens
train best there:
    vit_nano_patch7_28    28 px, 16 patches + CLS, width 64, depth 6  (MNIST / digits)
    vit_nano_patch4_28    28 px, 49 patches + CLS, width 96, depth 6
    vit_pico_patch4_28    28 px, 49 patches + CLS, width 48, depth 6  (the CPU study)
    vit_micro_patch4_32   32 px, 64 patches + CLS, width 128, depth 8 (CIFAR-sized)
"""
from .config import HALF, ViTConfig

_PRESET = dict(mean=HALF, std=HALF, num_classes=10, in_timm=False, crop_pct=1.0)

BUILTIN_MODELS = {
    # DeiT-Ti/16 (Touvron et al., arXiv 2012.12877), timm's configuration.
    "deit_tiny_patch16_224": ViTConfig(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    # DeiT-S/16, timm's configuration; about 4.6 GMACs at 224 px.
    "deit_small_patch16_224": ViTConfig(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    # ViT-B/16 (Dosovitskiy et al., arXiv 2010.11929), timm's configuration.
    "vit_base_patch16_224": ViTConfig(patch_size=16, embed_dim=768, depth=12, num_heads=12, mean=HALF, std=HALF),
    # ViT-L/16, timm's configuration.
    "vit_large_patch16_224": ViTConfig(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mean=HALF, std=HALF),
    # 28 px, 4x4 patches of 7 px: 17 tokens. The quickstart's MNIST -> digits model.
    "vit_nano_patch7_28": ViTConfig(patch_size=7, embed_dim=64, depth=6, num_heads=2, img_size=28, **_PRESET),
    # 28 px, 7x7 patches of 4 px: 50 tokens.
    "vit_nano_patch4_28": ViTConfig(patch_size=4, embed_dim=96, depth=6, num_heads=3, img_size=28, **_PRESET),
    # 28 px, 7x7 patches of 4 px: 50 tokens at width 48, so routing has k >= 6 tokens to choose
    # at C = 0.125 while a cell still trains in seconds on one core (the CPU study's model).
    "vit_pico_patch4_28": ViTConfig(patch_size=4, embed_dim=48, depth=6, num_heads=2, img_size=28, **_PRESET),
    # 32 px, 8x8 patches of 4 px: 65 tokens.
    "vit_micro_patch4_32": ViTConfig(patch_size=4, embed_dim=128, depth=8, num_heads=4, img_size=32, **_PRESET),
}
