"""`cls`: EViT-style routing by the previous block's CLS-row attention (arXiv 2202.07800).

Score of token i: mean_h A_h[0, i], the attention the CLS query pays to token i
(CLS's own entry included, so with cls_policy="compete" it can drop itself).
"""
from ._registry import register_router
from .attention_stats import AttentionRouter


@register_router("cls")
class ClsAttentionRouter(AttentionRouter):
    """Keeps the tokens the CLS token attended to most in the previous block."""

    attention_stat = "cls"
