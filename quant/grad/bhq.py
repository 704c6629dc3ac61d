"""Block Householder quantization, BHQ (Chen et al., NeurIPS 2020, arXiv 2010.14298, Sec. 4.3; docs/methods.md
§1.10).

PSQ (quant.grad.psq) still spends a whole row's grid on one sample when a few rows are much larger than the rest.
BHQ spreads a large row over a block of small ones with an orthogonal transform, quantizes per row there, and
transforms back. Per block of k rows led by a large row x_1, the Householder reflection
    H = I - 2 v v^T / (v^T v),   v = e_1 - 1_k / sqrt(k),
maps e_1 to 1_k / sqrt(k): after H every row of the block holds x_1 / sqrt(k) plus a little of the others, so the
k per-row ranges are ~max|x_1| / sqrt(k) instead of one max|x_1| and k - 1 tiny ones. H is symmetric and orthogonal
(H^T H = I), so g_hat = H Q(H g) is unbiased when Q is, and its error has the same norm as Q's.

Blocks (ours; the paper sizes its groups from the large rows' magnitudes): rows sorted by their maximum, the
N / k largest each lead one block, and the remaining rows are dealt to the blocks in that sorted order, so each
block gets one row of every tier. `block` = k (default 8); N is padded with zero rows to a multiple of k. Like PSQ
the scale is per row, so BHQ runs with quant.kernel=fake.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from quant.grad.base import GradPolicy
from quant.grad.psq import row_maxima


def householder_vector(k: int, device=None) -> Tensor:
    """v / |v| for v = e_1 - 1_k / sqrt(k): H = I - 2 u u^T maps e_1 to the uniform unit vector (k,)."""
    v = torch.full((k,), -1.0 / math.sqrt(k), device=device)
    v[0] += 1.0
    return v / v.norm()


def reflect(x: Tensor, u: Tensor) -> Tensor:
    """H x for H = I - 2 u u^T applied along dimension 1 of x (G, k, M): x - 2 u (u^T x)."""
    u = u[None, :, None]  # (1, k, 1)
    return x - 2 * u * (u * x).sum(dim=1, keepdim=True)


@dataclass(frozen=True, kw_only=True)
class BHQPolicy(GradPolicy):
    """Householder-transform blocks of k rows (one large, k - 1 small), per-row min-max, transform back."""

    block: int = 8

    per_tensor: ClassVar[bool] = False
    fusable: ClassVar[bool] = False  # a block transform over rows

    def __post_init__(self) -> None:
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 2:
            raise ValueError(f"quant.grad.block={self.block!r} is invalid: use an integer >= 2 (rows per block)")

    def prepare(self, g: Tensor) -> tuple[Tensor, object]:
        rows = g.reshape(g.shape[0], -1)  # (N, M)
        n, k = rows.shape[0], self.block
        groups = -(-n // k)
        padded = torch.cat([rows, rows.new_zeros(groups * k - n, rows.shape[1])])  # (G k, M)
        order = padded.abs().amax(dim=1).argsort(descending=True)  # (G k,) largest first
        # Block j: the j-th largest row, then the j-th row of every later tier of G rows.
        slots = order.reshape(k, groups).t().contiguous()  # (G, k); contiguous: indexing by a transposed index
        # gives eager strides that differ from the traced ones, and a compiled view then fails
        u = householder_vector(k, device=g.device)
        return reflect(padded[slots], u), (slots, u, g.shape, n)

    def clip(self, g: Tensor, g_max: Tensor, gamma: Tensor) -> Tensor:
        row_max = row_maxima(g.reshape(-1, g.shape[-1]))  # (G k, 1): every row of every block
        return torch.where(row_max > 0, row_max, torch.ones_like(row_max)).reshape(g.shape[0], g.shape[1], 1)

    def restore(self, g_hat: Tensor, aux: object) -> Tensor:
        slots, u, shape, n = aux
        back = reflect(g_hat, u).reshape(-1, g_hat.shape[-1])  # H is its own inverse; (G k, M) in slot order
        rows = back[slots.reshape(-1).argsort()]  # back to the original row order (an inverse permutation)
        return rows[:n].reshape(shape)
