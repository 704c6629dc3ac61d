"""In-hindsight range estimation (Fournarakis & Nagel, 2021, arXiv 2105.04246; docs/methods.md §1.10).

Dynamic quantization (min-max, MSE, LBT) needs a pass over the current gradient before it can be quantized. In
hindsight, the range used at step t comes only from earlier steps: a running estimate of the gradient's maximum,
    c_t = m c_{t-1} + (1 - m) max|g_{t-1}|,
updated after step t-1's gradient was quantized, from that gradient's maximum (which an accelerator can collect
while writing the tensor out). Values beyond c_t saturate. The first gradient, with no history yet, uses its own
maximum (c_0 = max|g_0|; the paper initialises the range from a first pass, a choice of ours in its details).

State: the layer's `gamma` buffer holds the range c itself (`stores_range`); the ratio used, c / max|g_t|, is what
the statistics report as gamma, so it is comparable with the other policies (above 1 when the range is wider than
this gradient). We quantize on the symmetric grid [-c, c] like every other policy here (the paper tracks min and
max separately). Under DDP the next range moves with the rank mean of the maxima (quant.apply_deferred_updates).
`momentum` (0.9) is ours: exposed as a field, not confirmed from the paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from quant.grad.base import GradPolicy


@dataclass(frozen=True, kw_only=True)
class HindsightPolicy(GradPolicy):
    """Clip at a running average of earlier gradients' maxima; the current tensor's statistics only update it."""

    momentum: float = 0.9

    stores_range: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum < 1:
            raise ValueError(f"quant.grad.momentum={self.momentum!r} is invalid: use a number in [0, 1)")

    def initial_gamma(self) -> float:
        return 0.0  # no range yet: the first gradient uses its own maximum

    def choose_gamma(self, g: Tensor, g_max: Tensor, gamma: Tensor, bits: int) -> Tensor:
        # A zero or non-finite gradient is passed through unquantized; its reported ratio stays 1, not inf or NaN.
        return torch.where((gamma > 0) & (g_max > 0) & torch.isfinite(g_max), gamma / g_max, torch.ones_like(g_max))

    def update_gamma(self, gamma: Tensor, clip_fraction: Tensor, bits: int, g_max: Tensor | None = None) -> Tensor:
        return torch.where(gamma > 0, self.momentum * gamma + (1 - self.momentum) * g_max, g_max)
