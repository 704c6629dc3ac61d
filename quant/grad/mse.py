"""MSE-optimal gradient interval over the entire gradient (METHODS 1.3, the paper's "entire-gradient" optimum).

Each backward, gamma minimises the expected squared quantization error of the whole tensor under stochastic
rounding: f(1-f)D^2 for in-range elements, (|g| - c)^2 for clipped ones (quant.primitives.expected_squared_error).
`candidates` ratios k/K, k = 1..K, are scored in one vectorised (K, N) pass.

Unconfirmed details, exposed as fields:
- `sample_size`: the score is a mean over elements, so a uniform random subsample estimates it without bias;
  None scores every element (exact, K times the cost of quantizing). g_max always comes from the full tensor.
- the search runs on every backward, for the gradient it quantizes. "Every k steps" would need a data-dependent
  skip, i.e. a host sync or a graph branch; on a subsample the search costs less than that would save.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from quant.grad.base import GradPolicy
from quant.primitives import expected_squared_error


@dataclass(frozen=True, kw_only=True)
class MSEPolicy(GradPolicy):
    """gamma = argmin over k/K of the expected whole-tensor squared error."""

    candidates: int = 32
    sample_size: int | None = 32768

    def __post_init__(self) -> None:
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 2:
            raise ValueError(f"quant.grad.candidates={self.candidates!r} is invalid: use an integer >= 2")
        if self.sample_size is not None and (isinstance(self.sample_size, bool)
                                             or not isinstance(self.sample_size, int) or self.sample_size < 1):
            raise ValueError(f"quant.grad.sample_size={self.sample_size!r} is invalid: use an integer >= 1, "
                             f"or null for the whole tensor")

    def choose_gamma(self, g: Tensor, g_max: Tensor, gamma: Tensor, bits: int) -> Tensor:
        values = g.reshape(-1)  # (N,)
        if self.sample_size is not None and values.numel() > self.sample_size:
            values = values[torch.randint(values.numel(), (self.sample_size,), device=g.device)]  # (S,)
        ratios = torch.arange(1, self.candidates + 1, device=g.device, dtype=torch.float32) / self.candidates
        clips = (ratios * g_max).unsqueeze(1)  # (K, 1)
        error = expected_squared_error(values.unsqueeze(0), clips, bits).mean(dim=1)  # (K,)
        return (error.argmin() + 1).float() / self.candidates  # ratios[argmin], without a data-dependent index
