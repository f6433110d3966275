"""Analytic forward MACs per image of routed ViTs, split by component (no torch needed).

Convention: like the A-MoD paper, timm and fvcore, the headline number is
multiply-accumulates (MACs), which those sources call "FLOPs". `MacCount.gmacs`
is that number / 1e9; `MacCount.gflops` is the arithmetic count, 2 x MACs.
Only matmul / conv MACs are counted (as fvcore and torch's FlopCounterMode do):
norms, softmax, GELU, residual adds, top-k, gather and scatter are free.

Per image, with N = (img/patch)^2 + 1 tokens (CLS counted), width d and MLP
hidden width h = int(d * mlp_ratio):

- embed:          patch-embedding conv, (N-1) * d * in_chans * patch^2
- block of n:     (4 d^2 + 2 d h) n + 2 n^2 d   (= 12 n d^2 + 2 n^2 d at mlp_ratio 4:
                  qkv 3nd^2, proj nd^2, MLP 8nd^2, scores + weighted sum 2n^2 d)
- dense_blocks:   unrouted blocks at n = N
- routed_blocks:  routed blocks at n = k = max(1, floor(C N))
- router:         per routed block, the cost of scoring the N tokens (each router's
                  declared `score_macs`, amod_bench.routers.traits):
    mod, mod_tanh   N d       (the d -> 1 linear router)
    amod            0 with score_impl="explicit": the previous block already
                    materialises A_h, and the column mean is ~H N^2 additions,
                    no MACs; N^2 d with score_impl="chunked" (q.k recomputed
                    in the log-sum-exp second pass)
    cls             0 explicit; N d chunked (one query row recomputed)
    random          0
- head:           d * num_classes (the CLS token only)

Training MACs per sample use the usual 3 x forward (backward ~ 2 x forward;
Kaplan et al. 2020, PaLM appendix B) for every component, although the
detached attention-score pass of amod / cls has no backward.

isoFLOP baseline: the dense model cut to the first L' blocks, L' the depth
whose total MACs are nearest those of the MoD-routed model at the same
capacity and routed layers, ties to the shallower model (`isoflop_match` gives
the depth and the exact ratio; the paper's own rounding is inconsistent).

    >>> round(count_macs("deit_small_patch16_224").gmacs, 2)
    4.6
    >>> isoflop_match("deit_small_patch16_224", capacity=0.5).depth
    9
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Optional, Union

from amod_bench.models._registry import get_config
from amod_bench.models.config import ViTConfig
from amod_bench.routers.layout import (
    DEFAULT_SCORE_IMPL, check_attention_predecessors, check_capacity, check_cls_policy, check_score_impl,
    kept_tokens, resolve_routed_layers,
)
from amod_bench.routers.traits import router_traits

ModelSpec = Union[str, ViTConfig, Mapping]

TRAIN_MULTIPLIER = 3  # forward + backward ~ 3 x forward


@dataclass(frozen=True)
class MacCount:
    """Forward MACs per image by component."""

    embed: int
    dense_blocks: int
    routed_blocks: int
    router: int
    head: int

    @property
    def total(self) -> int:
        return self.embed + self.dense_blocks + self.routed_blocks + self.router + self.head

    @property
    def gmacs(self) -> float:
        """MACs / 1e9: the paper's (and timm's, fvcore's) "GFLOPs"."""
        return self.total / 1e9

    @property
    def flops(self) -> int:
        """Arithmetic FLOPs, 2 x MACs."""
        return 2 * self.total

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class IsoFlopMatch:
    """The isoFLOP depth for a routed model and how close it comes."""

    depth: int  # L', blocks kept from the front of the dense model
    macs: int  # total MACs of the L'-block dense model
    target_macs: int  # total MACs of the MoD-routed model it stands in for
    ratio: float  # macs / target_macs, the exact FLOP ratio to report


def _config(model: ModelSpec) -> ViTConfig:
    if isinstance(model, ViTConfig):
        return model
    if isinstance(model, str):
        return get_config(model)
    names = {f.name for f in fields(ViTConfig)}
    return ViTConfig(**{k: v for k, v in dict(model).items() if k in names})


def block_macs(num_tokens: int, dim: int, mlp_hidden: int) -> int:
    """One pre-LN ViT block on n tokens: linears (4 d^2 + 2 d h) n plus attention 2 n^2 d."""
    n, d = num_tokens, dim
    return (4 * d * d + 2 * d * mlp_hidden) * n + 2 * n * n * d


def _shape(cfg: ViTConfig, img_size: Optional[int], num_classes: Optional[int]):
    img = cfg.img_size if img_size is None else img_size
    classes = cfg.num_classes if num_classes is None else num_classes
    patches = (img // cfg.patch_size) ** 2
    embed = patches * cfg.embed_dim * cfg.in_chans * cfg.patch_size ** 2
    head = cfg.embed_dim * classes
    return patches + 1, embed, head, int(cfg.embed_dim * cfg.mlp_ratio)


def count_macs(model: ModelSpec, *, router: str = "dense", capacity: float = 0.5,
               routed_layers="every_other", cls_policy: str = "compete", img_size: Optional[int] = None,
               num_classes: Optional[int] = None, **router_options) -> MacCount:
    """Forward MACs per image of `build_model(model, ...)` with the same arguments.

    Args:
        model: a registered model name (or its `model_config` dict).
        router, capacity, routed_layers, cls_policy, img_size, num_classes: as in
            `amod_bench.models.build_model` (same defaults; dense ignores capacity).
        **router_options: only `score_impl` changes the count (amod / cls);
            other options (seed, alpha, chunk_size) cost nothing.
    """
    cfg = _config(model)
    traits = router_traits(router)
    check_capacity(capacity)
    check_cls_policy(cls_policy)  # CLS policy changes which tokens are kept, never how many
    impl = check_score_impl(router_options.get("score_impl", DEFAULT_SCORE_IMPL))
    routed = resolve_routed_layers(cfg.depth, routed_layers)
    if traits.reads_attention:
        check_attention_predecessors(router, routed)
    n, embed, head, hidden = _shape(cfg, img_size, num_classes)
    d = cfg.embed_dim
    if not traits.routes:  # dense, isoflop
        depth = cfg.depth
        if traits.truncate_to_match:
            depth = isoflop_match(cfg, router=traits.truncate_to_match, capacity=capacity,
                                  routed_layers=routed_layers, img_size=img_size, num_classes=num_classes).depth
        return MacCount(embed, depth * block_macs(n, d, hidden), 0, 0, head)
    k = kept_tokens(n, capacity)
    return MacCount(
        embed=embed,
        dense_blocks=(cfg.depth - len(routed)) * block_macs(n, d, hidden),
        routed_blocks=len(routed) * block_macs(k, d, hidden),
        router=len(routed) * traits.score_macs(n, d, impl),
        head=head,
    )


def isoflop_match(model: ModelSpec, *, capacity: float = 0.5, routed_layers="every_other",
                  img_size: Optional[int] = None, num_classes: Optional[int] = None,
                  router: str = "mod") -> IsoFlopMatch:
    """Depth L' of the dense model whose MACs are nearest the routed model's (ties: shallower)."""
    cfg = _config(model)
    target = count_macs(cfg, router=router, capacity=capacity, routed_layers=routed_layers,
                        img_size=img_size, num_classes=num_classes).total
    n, embed, head, hidden = _shape(cfg, img_size, num_classes)
    per_block = block_macs(n, cfg.embed_dim, hidden)
    # strict < while ascending: an exact tie keeps the shallower depth
    best = min(range(1, cfg.depth + 1), key=lambda L: (abs(embed + head + L * per_block - target), L))
    macs = embed + head + best * per_block
    return IsoFlopMatch(depth=best, macs=macs, target_macs=target, ratio=macs / target)


def isoflop_depth(model: ModelSpec, **kwargs) -> int:
    """`isoflop_match(...).depth`: blocks the isoflop model keeps."""
    return isoflop_match(model, **kwargs).depth


def flop_ratio(model: ModelSpec, **kwargs) -> float:
    """MACs of the configured model / MACs of the full-depth dense model (same img_size, classes)."""
    dense = count_macs(model, img_size=kwargs.get("img_size"), num_classes=kwargs.get("num_classes"))
    return count_macs(model, **kwargs).total / dense.total


def train_macs_per_sample(model: ModelSpec, **kwargs) -> int:
    """Training MACs per sample: 3 x the forward MACs (module docstring)."""
    return TRAIN_MULTIPLIER * count_macs(model, **kwargs).total
