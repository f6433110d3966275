"""Numerical checks of the routed models: bf16 against fp32, and A-MoD's chunked score path against the explicit one.

Both compare two forward passes on the same input and the same weights:
- `kept_agreement` per routed block: the mean over images of |kept_a ∩ kept_b| / k
  (1.0: both passes routed the same tokens everywhere);
- `logit_max_abs_err`, `logit_rel_err` (||a - b|| / ||b||, b the reference) and
  `top1_agreement` (fraction of images with the same arg-max class).
"""
from __future__ import annotations

from .measure import autocast


def kept_agreement(kept_a, kept_b) -> float:
    """Mean over images of the fraction of kept tokens shared; kept_* (B, k) token indices."""
    same = (kept_a.unsqueeze(-1) == kept_b.unsqueeze(-2)).any(-1)  # (B, k): token of a also kept by b
    return same.float().mean().item()


def forward_routed(model, x, device, dtype):
    """(logits as float32 (B, classes), {block: kept (B, k)}) of one inference pass under autocast `dtype`."""
    import torch
    with torch.no_grad(), autocast(device, dtype):
        logits, kept = model(x, return_routing=True)
    return logits.float(), kept


def compare(run_a, run_b) -> dict:
    """Agreement of run a with reference run b; run_*: the pairs `forward_routed` returns."""
    (logits_a, kept_a), (logits_b, kept_b) = run_a, run_b
    if set(kept_a) != set(kept_b):
        raise ValueError(f"the runs routed different blocks: {sorted(kept_a)} vs {sorted(kept_b)}")
    per_block = {str(block): kept_agreement(kept_a[block], kept_b[block]) for block in sorted(kept_a)}
    diff = logits_a - logits_b
    return {
        "kept_agreement": per_block,
        "kept_agreement_min": min(per_block.values()) if per_block else None,
        "kept_agreement_mean": sum(per_block.values()) / len(per_block) if per_block else None,
        "logit_max_abs_err": diff.abs().max().item(),
        "logit_rel_err": (diff.norm() / logits_b.norm().clamp_min(1e-30)).item(),
        "top1_agreement": (logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean().item(),
    }


def bf16_vs_fp32(model, x, device) -> dict:
    """The model under bf16 autocast against itself in fp32 (the reference)."""
    import torch
    return compare(forward_routed(model, x, device, torch.bfloat16), forward_routed(model, x, device, torch.float32))


def chunked_vs_explicit(chunked, explicit, x, device, dtype) -> dict:
    """A-MoD's chunked score path against the explicit one (the reference); both models hold the same weights."""
    import torch
    for a, b in zip(chunked.state_dict().items(), explicit.state_dict().items()):
        if a[0] != b[0] or not torch.equal(a[1], b[1]):
            raise ValueError(f"chunked_vs_explicit needs the same weights; they differ at {a[0]}")
    return compare(forward_routed(chunked, x, device, dtype), forward_routed(explicit, x, device, dtype))

