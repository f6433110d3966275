"""`random`: uniform random top-k per image, seeded and reproducible (a reviewer-requested baseline)."""
import torch

from ._registry import register_router
from .base import Router

_LAYER_STRIDE = 1_000_003  # block i draws from seed + i * stride: distinct, reproducible streams


@register_router("random")
class RandomRouter(Router):
    """Scores ~ U(0, 1) from a generator seeded with (seed, block index).

    The same seed and the same sequence of calls give the same routing; the
    generator lives on the input's device and is not part of the state_dict
    (a training checkpoint keeps its position: `rng_state` / `load_rng_state`).

    Args:
        seed: base seed of the generators.
    """

    def __init__(self, *, dim: int, num_heads: int = 1, layer_index: int = 0, seed: int = 0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, layer_index=layer_index)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self._generator = None
        self._resume_state = None  # a stream position to continue from, applied at the next call

    def reset(self) -> None:
        """Restart the random stream from the seed."""
        self._generator = None
        self._resume_state = None

    def rng_state(self) -> torch.Tensor | None:
        """Where the stream is (uint8 tensor), or None before the first call."""
        return None if self._generator is None else self._generator.get_state()

    def load_rng_state(self, state: torch.Tensor) -> None:
        """Continue the stream from `state` (from `rng_state`) at the next call."""
        self._generator, self._resume_state = None, state

    @torch.compiler.disable  # dynamo cannot trace a torch.Generator: run this op eagerly
    def forward(self, x, attn_stat=None):
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device)
            self._generator.manual_seed(self.seed + _LAYER_STRIDE * self.layer_index)
            if self._resume_state is not None:
                self._generator.set_state(self._resume_state)
                self._resume_state = None
        return torch.rand(x.shape[:2], generator=self._generator, device=x.device, dtype=x.dtype)

    def gate(self, kept_scores):
        return None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, seed={self.seed}"
