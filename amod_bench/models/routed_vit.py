"""Routed Vision Transformer: timm's VisionTransformer with Mixture-of-Depths blocks.

The model is timm's `VisionTransformer` with `block_fn=make_block`, so its
state_dict keys are timm's; routers add their own under their block
(`blocks.1.router.weight`). Forward contract as timm's:
`forward_features -> forward_head -> forward`, with the routing decisions as an
opt-in extra: `model(x, return_routing=True) -> (logits, {block: kept (B, k)})`.

Building goes through timm's `build_model_with_cfg`, so pretrained weights load
through timm's own code (file formats, hub download, position-embedding
resampling, classifier handling); `checkpoint_filter_fn` below adds only what
routing changes (router keys, truncated depth, head shape).
"""
from __future__ import annotations

import logging
import os
import re
from functools import partial
from typing import Optional

import torch
from timm.models import build_model_with_cfg
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter_fn

from amod_bench import flops
from amod_bench.routers import create_router
from amod_bench.routers import router_options as accepted_options
from amod_bench.routers.layout import (
    check_attention_predecessors, check_capacity, check_cls_policy, resolve_routed_layers,
)
from amod_bench.routers.traits import router_traits

from ._registry import get_config
from .blocks import ScoringAttention, make_block

_logger = logging.getLogger(__name__)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
_CLASSIFIER_KEYS = ("head.weight", "head.bias")


class RoutedVisionTransformer(VisionTransformer):
    """timm ViT whose blocks may route tokens (Mixture-of-Depths).

    Args:
        router: a name from `amod_bench.routers.list_routers()`.
        capacity: fraction C of the N tokens (CLS counted) a routed block keeps.
        routed_layers: "every_other", "last:K" or a list of block indices.
        cls_policy: "compete" (CLS scored like any token) or "keep" (always kept).
        router_options: router-specific options (e.g. score_impl, alpha, seed).
        **kwargs: timm `VisionTransformer` arguments (depth is the built depth;
            the isoflop builder passes the truncated one).
    """

    def __init__(self, *, router: str = "dense", capacity: float = 0.5, routed_layers="every_other",
                 cls_policy: str = "compete", router_options: Optional[dict] = None, **kwargs) -> None:
        router_options = dict(router_options or {})
        routed = resolve_routed_layers(kwargs["depth"], routed_layers) if router_traits(router).routes else ()
        dim, num_heads = kwargs["embed_dim"], kwargs["num_heads"]
        routers = {i: create_router(router, dim=dim, num_heads=num_heads, layer_index=i, **router_options)
                   for i in routed}
        # the block before an attention-scored router computes the statistic the router reads
        probes = {i - 1: r.attention_probe() for i, r in routers.items() if r.attention_stat is not None}
        block_fn = partial(make_block, routers=routers, probes=probes, capacity=capacity,
                           keep_cls=cls_policy == "keep")
        super().__init__(block_fn=block_fn, attn_layer=ScoringAttention, **kwargs)
        self.routing = dict(router=router, capacity=capacity, routed_layers=routed, cls_policy=cls_policy,
                            depth=kwargs["depth"], options=router_options)

    def forward_features(self, x: torch.Tensor, return_routing: bool = False):
        """(B, C, H, W) -> (B, N, D) tokens after the final norm [, {block: kept (B, k)}]."""
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        attn_stat, routing = None, {}
        for i, block in enumerate(self.blocks):
            x, attn_stat, kept = block(x, attn_stat)
            if kept is not None:
                routing[i] = kept
        x = self.norm(x)
        return (x, routing) if return_routing else x

    def forward(self, x: torch.Tensor, return_routing: bool = False):
        """Logits (B, num_classes); with return_routing, also {block index: kept indices (B, k)}."""
        x, routing = self.forward_features(x, return_routing=True)
        x = self.forward_head(x)
        return (x, routing) if return_routing else x

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # Recomputing a routed block would redraw the random router's tokens.
        if enable:
            raise NotImplementedError("gradient checkpointing is not supported by routed ViTs")

    def forward_intermediates(self, *args, **kwargs):
        raise NotImplementedError("forward_intermediates: use forward_features(x, return_routing=True)")


def checkpoint_filter_fn(state_dict: dict, model: RoutedVisionTransformer) -> dict:
    """Adapt a timm ViT checkpoint (dense or routed) to a routed model; pure function.

    On top of timm's ViT filter (key remaps, position-embedding and patch-embed
    resampling):
    - blocks beyond the model's depth are dropped (isoflop loads full-depth weights);
    - router keys the checkpoint lacks keep the model's fresh init (MoD: timm's
      Linear init; mod_tanh: zeros); router keys the model lacks are dropped;
    - a classifier of another shape (or none in the model) keeps the model's
      fresh head, so the head is re-initialised whenever num_classes differs.
    Any other mismatch still fails timm's strict load.
    """
    state_dict = vit_checkpoint_filter_fn(state_dict, model)
    own = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        block = _BLOCK_KEY.match(key)
        if block and int(block.group(1)) >= len(model.blocks):
            continue
        if ".router." in key and key not in own:
            _logger.info("dropping %s: this model has no router there", key)
            continue
        if key in _CLASSIFIER_KEYS and (key not in own or own[key].shape != value.shape):
            continue
        out[key] = value
    for key, value in own.items():
        if key not in out and (".router." in key or key in _CLASSIFIER_KEYS):
            out[key] = value
    return out


def _pretrained_source(name: str, pretrained) -> tuple[bool, dict]:
    """(load?, pretrained_cfg overlay) for pretrained None | "timm" | local path."""
    if pretrained is None or pretrained is False:
        return False, {}
    if pretrained == "timm":
        if not get_config(name).in_timm:
            raise ValueError(f"{name!r} is an amod-bench preset with no published weights; "
                             "pass a local checkpoint path as pretrained=")
        return True, {}  # timm's own pretrained_cfg: HF hub (or URL) download
    if isinstance(pretrained, (str, os.PathLike)):
        path = os.fspath(pretrained)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
        return True, dict(file=path)  # timm loads .safetensors, else torch.load(weights_only=True)
    raise ValueError(f"pretrained must be None, 'timm' or a checkpoint path, got {pretrained!r}")


def create_routed_vit(name: str, *, router: str = "dense", capacity: float = 0.5, routed_layers="every_other",
                      cls_policy: str = "compete", num_classes: Optional[int] = None,
                      img_size: Optional[int] = None, pretrained=None, drop_path_rate: float = 0.0,
                      router_options: Optional[dict] = None):
    """Build registered model `name`; see `amod_bench.models.build_model`."""
    cfg = get_config(name)
    traits = router_traits(router)
    capacity = check_capacity(capacity)
    check_cls_policy(cls_policy)
    router_options = dict(router_options or {})
    unknown = sorted(set(router_options) - set(accepted_options(router)))
    if unknown:
        raise ValueError(f"router {router!r} got unknown option(s) {unknown}; "
                         f"it accepts {accepted_options(router)}")
    routed = resolve_routed_layers(cfg.depth, routed_layers)  # validated for every router
    if traits.reads_attention:
        check_attention_predecessors(router, routed)
    num_classes = cfg.num_classes if num_classes is None else num_classes
    img_size = cfg.img_size if img_size is None else img_size
    depth = cfg.depth
    if traits.truncate_to_match:
        depth = flops.isoflop_depth(name, router=traits.truncate_to_match, capacity=capacity,
                                    routed_layers=routed_layers, img_size=img_size, num_classes=num_classes)

    load, overlay = _pretrained_source(name, pretrained)
    # The model's own input size and class count, so timm.data.resolve_model_data_config(model)
    # is right after img_size overrides, and timm leaves the head to checkpoint_filter_fn.
    overlay.update(input_size=(cfg.in_chans, img_size, img_size), num_classes=num_classes)
    preset_cfg = None if cfg.in_timm else dict(
        architecture=name, input_size=(cfg.in_chans, cfg.img_size, cfg.img_size), mean=cfg.mean, std=cfg.std,
        num_classes=cfg.num_classes, crop_pct=cfg.crop_pct, interpolation="bicubic", fixed_input_size=True,
        first_conv="patch_embed.proj", classifier="head")
    model = build_model_with_cfg(
        RoutedVisionTransformer, name, load,
        pretrained_cfg=preset_cfg,
        pretrained_cfg_overlay=overlay,
        pretrained_filter_fn=checkpoint_filter_fn,
        pretrained_strict=True,
        img_size=img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=num_classes,
        embed_dim=cfg.embed_dim, depth=depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=drop_path_rate,
        router=router, capacity=capacity, routed_layers=routed, cls_policy=cls_policy,
        router_options=router_options,
    )
    model.routing["full_depth"] = cfg.depth
    return model

