"""Where and how much to route: capacity, routed layers, CLS policy (stdlib only).

The model builder, the FLOP counter and the suite validator all need the same
answers to "how many tokens does a routed block keep?" and "which blocks are
routed?", and the last two must not import torch. So these rules live here,
as pure functions over ints.

    >>> kept_tokens(197, 0.5), kept_tokens(197, 0.125)
    (98, 24)
    >>> resolve_routed_layers(12, "every_other")
    (1, 3, 5, 7, 9, 11)
    >>> resolve_routed_layers(12, "last:4")
    (9, 11)
"""
from __future__ import annotations

import math
from typing import Sequence, Union

RoutedLayers = Union[str, Sequence[int]]

CLS_POLICIES = ("compete", "keep")  # compete: CLS is scored like any token (paper); keep: always kept
SCORE_IMPLS = ("explicit", "chunked")  # how attention-scored routers read the previous block's attention
# explicit measured faster on a 2-core CPU (see routers/attention_stats.py)
DEFAULT_SCORE_IMPL = "explicit"

_EPS = 1e-9  # C * N is computed in floating point: 0.29 * 100 = 28.999999999999996 must give 29


def check_capacity(capacity: float) -> float:
    """Return `capacity` as a float, or raise ValueError unless 0 < capacity <= 1."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)):
        raise ValueError(f"capacity must be a number in (0, 1], got {capacity!r}")
    if not 0.0 < capacity <= 1.0:  # also rejects nan
        raise ValueError(f"capacity must be in (0, 1], got {capacity}")
    return float(capacity)


def kept_tokens(num_tokens: int, capacity: float) -> int:
    """k = floor(C * N), at least 1. N counts the CLS token (197 at 224 px, patch 16)."""
    capacity = check_capacity(capacity)
    return max(1, min(num_tokens, math.floor(capacity * num_tokens + _EPS)))


def check_cls_policy(cls_policy: str) -> str:
    if cls_policy not in CLS_POLICIES:
        raise ValueError(f"cls_policy must be one of {list(CLS_POLICIES)}, got {cls_policy!r}")
    return cls_policy


def check_score_impl(score_impl: str) -> str:
    if score_impl not in SCORE_IMPLS:
        raise ValueError(f"score_impl must be one of {list(SCORE_IMPLS)}, got {score_impl!r}")
    return score_impl


def resolve_routed_layers(depth: int, routed_layers: RoutedLayers) -> tuple[int, ...]:
    """The sorted 0-indexed blocks that route, for a model with `depth` blocks.

    Args:
        depth: number of transformer blocks L.
        routed_layers: one of
            - ``"every_other"``: blocks 1, 3, 5, ... (paper default; with even L the
              last block is routed, with odd L it is dense);
            - ``"last:K"``: alternate within the last K blocks, ending at the last
              block: L-1, L-3, ... >= L-K (``"last:4"`` with L=12 gives 9, 11);
            - a list of block indices.
    """
    if isinstance(routed_layers, str):
        spec = routed_layers.strip()
        if spec == "every_other":
            return tuple(range(1, depth, 2))
        if spec.startswith("last:"):
            count = spec[len("last:"):]
            if not count.isdigit() or not 1 <= int(count) <= depth:
                raise ValueError(
                    f"routed_layers {routed_layers!r}: K in 'last:K' must be an integer in 1..{depth}")
            return tuple(sorted(range(depth - 1, depth - 1 - int(count), -2)))
        raise ValueError(
            f"routed_layers must be 'every_other', 'last:K' or a list of block indices, got {routed_layers!r}")
    try:
        layers = list(routed_layers)
    except TypeError:
        raise ValueError(f"routed_layers must be a string or a list of ints, got {routed_layers!r}") from None
    if not layers:
        raise ValueError("routed_layers is empty: use router='dense' for a model without routing")
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < depth:
            raise ValueError(f"routed_layers {layers}: {i!r} is not a block index in 0..{depth - 1}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"routed_layers {layers} repeats a block")
    return tuple(sorted(layers))


def check_attention_predecessors(router: str, routed: Sequence[int]) -> None:
    """Reject layouts an attention-scored router cannot serve.

    Such a router reads the attention of the block just before it over all N
    tokens; block 0 has no predecessor and a routed predecessor only saw k tokens.
    """
    routed_set = set(routed)
    for i in routed:
        if i == 0:
            raise ValueError(
                f"router {router!r} scores tokens with the previous block's attention, "
                f"so it cannot route block 0 (routed_layers={list(routed)})")
        if i - 1 in routed_set:
            raise ValueError(
                f"router {router!r} on block {i} needs block {i - 1}'s attention over all tokens, "
                f"but block {i - 1} is routed too (routed_layers={list(routed)})")
