"""amod-bench: convergence studies of Mixture-of-Depths routing in Vision Transformers.

A-MoD: "Attention Is All You Need For Mixture-of-Depths Routing", arXiv 2412.20875.
MoD:   Raposo et al., "Mixture-of-Depths", arXiv 2404.02258.
"""

__version__ = "0.1.0"
