"""Per-sample quantization, PSQ (Chen et al., "A Statistical Framework for Low-bitwidth Training of Deep Neural
Networks", NeurIPS 2020, arXiv 2010.14298, Sec. 4.2; docs/methods.md §1.10).

The output gradient dL/dY of a layer is a matrix with one row per sample (its first dimension: (N, C, H, W) for a
convolution, (N, F) or (N, T, F) for a linear layer). Its rows' ranges differ by orders of magnitude (a few
samples carry most of the loss), so one range for the whole tensor quantizes the small rows to zero. PSQ gives
each row its own min-max range: c_i = max_j |g_ij|, the symmetric grid [-c_i, c_i], stochastic rounding. The
paper shows the gradient's variance then depends on the sum of the rows' ranges squared rather than N times the
largest. A row of zeros stays zero. The scale differs per row, so dL/dW = g^T x is no longer one integer GEMM with
one scale: PSQ runs with quant.kernel=fake (the spec says so in one line otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from quant.grad.base import GradPolicy


def row_maxima(g: Tensor) -> Tensor:
    """max |g| of each row (first dimension), shaped to broadcast against g: (N, 1, ..., 1)."""
    return g.reshape(g.shape[0], -1).abs().amax(dim=1).reshape(-1, *([1] * (g.dim() - 1)))


@dataclass(frozen=True, kw_only=True)
class PSQPolicy(GradPolicy):
    """Min-max per sample: each row of dL/dY on its own symmetric grid."""

    per_tensor: ClassVar[bool] = False
    fusable: ClassVar[bool] = False  # per-row clips

    def clip(self, g: Tensor, g_max: Tensor, gamma: Tensor) -> Tensor:
        row_max = row_maxima(g)
        return torch.where(row_max > 0, row_max, torch.ones_like(row_max))  # a zero row: any clip keeps it zero
