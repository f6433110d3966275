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
manifest's `defaults.crop_pct`, else 0.875 (ImageNet's 256 -> 224). Both end with
ToImage -> ToDtype(float32, scale=True) -> Normalize(mean, std). Images arrive as PIL RGB
(grey images are converted to 3 channels when decoded).
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


def _to_normalised(mean: Sequence[float], std: Sequence[float]) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[float(m) for m in mean], std=[float(s) for s in std])]


def train_transform(img_size: int, mean: Sequence[float], std: Sequence[float], augment: dict) -> v2.Compose:
    """PIL RGB -> float [3, img_size, img_size]; `augment` already merged by resolve_augment."""
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
    steps += _to_normalised(mean, std)
    if augment["random_erasing"]:
        steps.append(v2.RandomErasing(p=float(augment["random_erasing"])))
    return v2.Compose(steps)


def eval_transform(img_size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float | None = None,
                   interpolation: str = "bilinear") -> v2.Compose:
    """Resize the short side to img_size / crop_pct, centre-crop img_size, normalise."""
    crop_pct = EVAL_CROP_PCT if crop_pct is None else float(crop_pct)
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return v2.Compose([v2.Resize(int(round(img_size / crop_pct)), interpolation=_INTERPOLATION[interpolation],
                                 antialias=True),
                       v2.CenterCrop(img_size), *_to_normalised(mean, std)])
