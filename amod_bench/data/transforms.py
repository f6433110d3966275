"""Train and eval transforms (torchvision.transforms.v2) from an `augment` dictionary.

`augment` keys (train only), merged as: AUGMENT_DEFAULTS <- the manifest's `defaults.augment`
<- the caller's dict. Unknown keys are rejected; a null value keeps the default.

  scale            [lo, hi]  RandomResizedCrop area fraction               default [0.08, 1.0]
  ratio            [lo, hi]  RandomResizedCrop aspect ratio                 default [0.75, 1.3333]
  hflip            bool      random horizontal flip (p=0.5)                 default true
                             (the bundled digits/MNIST manifests set false: a flipped glyph is another glyph)
  color_jitter     float or [brightness, contrast, saturation(, hue)]; 0 = off      default 0
  trivial_augment  bool      TrivialAugmentWide after the crop                default false
  random_erasing   float     RandomErasing probability (on the normalised tensor)   default 0
  interpolation    "bilinear" | "bicubic" | "nearest"                       default "bilinear"

Eval: Resize(round(img_size / crop_pct)) then CenterCrop(img_size); crop_pct defaults to the
manifest's `defaults.crop_pct`, else 0.875 (ImageNet's 256 -> 224). Images arrive as PIL RGB
(grey images are converted to 3 channels when decoded).

The per-sample transforms stop at a uint8 tensor; `BatchNormalize` then does what
ToDtype(float32, scale=True) -> Normalize(mean, std) (-> RandomErasing) would do, once per
batch: per-sample float ops on a 3 x 224 x 224 image are too small for torch's thread pool
(on a busy 2-core machine they ran 50x slower than single-threaded), and uint8 is 4x less
to stack.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2

AUGMENT_DEFAULTS: dict = {
    "scale": [0.08, 1.0],
    "ratio": [3 / 4, 4 / 3],
    "hflip": True,
    "color_jitter": 0.0,
    "trivial_augment": False,
    "random_erasing": 0.0,
    "interpolation": "bilinear",
}
EVAL_CROP_PCT = 0.875

_INTERPOLATION = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
                  "nearest": v2.InterpolationMode.NEAREST}


def resolve_augment(*layers: dict | None) -> dict:
    """Merge augment dictionaries over AUGMENT_DEFAULTS; unknown keys raise ValueError."""
    merged = dict(AUGMENT_DEFAULTS)
    for layer in layers:
        unknown = sorted(set(layer or {}) - set(AUGMENT_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown augment keys {unknown}; valid keys: {sorted(AUGMENT_DEFAULTS)}")
        merged.update({k: v for k, v in (layer or {}).items() if v is not None})  # YAML null: default
    if merged["interpolation"] not in _INTERPOLATION:
        raise ValueError(f"augment interpolation {merged['interpolation']!r}; choose from {sorted(_INTERPOLATION)}")
    return merged


# PIL -> plain uint8 (3, H, W); ToImage + ToPureTensor give the same tensor at about twice the cost
_TO_UINT8 = [v2.PILToTensor()]


class BatchNormalize:
    """uint8 (B, 3, H, W) -> float32 (x / 255 - mean) / std, then optional RandomErasing per image.

    Args:
        mean, std: per channel, on 0..1 pixel values.
        random_erasing: RandomErasing probability (0: off), applied on the normalised image.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], random_erasing: float = 0.0):
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
        self.mean = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1)
        self.erase = v2.RandomErasing(p=float(random_erasing)) if random_erasing else None

    def __call__(self, images: torch.Tensor, rng=None) -> torch.Tensor:
        # the same ops, in the same order, as v2.ToDtype(float32, scale=True) + v2.Normalize
        out = images.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)
        if self.erase is not None and len(out):
            out = torch.stack([rng(self.erase, x) if rng is not None else self.erase(x) for x in out])
        return out


def train_transform(img_size: int, augment: dict) -> v2.Compose:
    """PIL RGB -> uint8 [3, img_size, img_size]; `augment` already merged by resolve_augment."""
    interpolation = _INTERPOLATION[augment["interpolation"]]
    steps: list = [v2.RandomResizedCrop(img_size, scale=tuple(augment["scale"]), ratio=tuple(augment["ratio"]),
                                        interpolation=interpolation, antialias=True)]
    if augment["hflip"]:
        steps.append(v2.RandomHorizontalFlip())
    jitter = augment["color_jitter"]
    if jitter:
        steps.append(v2.ColorJitter(*jitter) if isinstance(jitter, (list, tuple)) else
                     v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    if augment["trivial_augment"]:
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    return v2.Compose(steps + _TO_UINT8)


def eval_transform(img_size: int, crop_pct: float | None = None, interpolation: str = "bilinear") -> v2.Compose:
    """Resize the short side to img_size / crop_pct, centre-crop img_size -> uint8 tensor."""
    crop_pct = EVAL_CROP_PCT if crop_pct is None else float(crop_pct)
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return v2.Compose([v2.Resize(int(round(img_size / crop_pct)), interpolation=_INTERPOLATION[interpolation],
                                 antialias=True),
                       v2.CenterCrop(img_size), *_TO_UINT8])
