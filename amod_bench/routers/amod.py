"""`amod`: A-MoD, parameter-free routing by attention received (arXiv 2412.20875).

Score of token i: r_i = 1/(H N) sum_h sum_j A_h[j, i], the column mean of the
previous block's post-softmax attention (scores sum to 1). Top-k on r, no
output scaling, no gradient through routing, zero added parameters.
"""
from ._registry import register_router
from .attention_stats import AttentionRouter


@register_router("amod")
class AModRouter(AttentionRouter):
    """Keeps the tokens that received the most attention in the previous block."""

    attention_stat = "received"
