"""Integer codes of the activation and weight grids, and the integer kernels' elementwise work as fused regions.

docs/methods.md §1.9. The exact and int8 kernels (quant.integer) compute on codes: grid_codes / weight_codes give
them, zero_index relates them to the uint8 grid index that quant.direct_conv takes, and interval_gradients is the
fake path's straight-through and interval gradient (quant.forward._FakeQuantize.backward) evaluated on codes.

activation_codes and input_gradients are the per-element passes over a layer's activation that the integer path
makes in forward and in backward, each one region of quant.fused: one compiled loop in eager mode instead of 6-11
ATen passes with their temporaries (the integer path's ResNet-20 eager step spent more time in those passes than in
its convolutions); the reference functions themselves under torch.compile or with quant.fused=false.
"""
from __future__ import annotations

import torch
from torch import Tensor

from quant.fused import fused
from quant.primitives import grid_index, unsigned_levels, weight_levels


def grid_codes(x: Tensor, upper: Tensor, signed: Tensor | float, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """(codes, step, zero): round-to-nearest codes of x on the grid ending at `upper` (float32 integers).

    Unsigned grid: codes k in [0, 2^b - 1], value k * step. Symmetric: k - (2^(b-1) - 1), value code * step.
    `zero` = 2^(b-1) - signed * (2^(b-1) - 1) is what int8 storage (k - 2^(b-1)) must add back to get the code.
    """
    half = 2 ** (bits - 1)
    lo = -upper * signed
    levels = unsigned_levels(bits) - signed
    step = (upper - lo) / levels
    k = grid_index(x.float(), lo, step, levels)
    zero = half - signed * (half - 1)
    return k + (zero - half), step, torch.as_tensor(zero, device=x.device)


def weight_codes(w: Tensor, scale: Tensor, bits: int, grid: str) -> tuple[Tensor, Tensor, Tensor]:
    """(codes, step, top): round-to-nearest codes k - zero of w on the weight grid `grid` with scale s_W
    (quant.forward.weight_grid), value code * step, and the grid's top value (the straight-through range's end)."""
    levels, zero = weight_levels(bits, grid)
    step = scale / zero
    return grid_index(w.float(), -scale, step, levels) - zero, step, scale * ((levels - zero) / zero)


def zero_index(bits: int, zero: Tensor) -> Tensor:
    """The grid index of real zero (grid_codes' `zero` given): 0 on the unsigned grid, 2^(b-1) - 1 on the
    symmetric one; code + zero_index is the index k in [0, 2^b - 1] that quant.direct_conv takes as uint8."""
    return 2 ** (bits - 1) - zero


def interval_gradients(g_hat: Tensor, x: Tensor, x_hat: Tensor, lo: Tensor, top: Tensor,
                        scale: Tensor) -> tuple[Tensor, Tensor]:
    """quant.forward._FakeQuantize.backward: straight-through in [lo, top], the learnable scale's gradient."""
    inside = (x >= lo) & (x <= top)
    grad_x = torch.where(inside, g_hat, 0.0)
    grad_scale = (g_hat * (x_hat - torch.where(inside, x, 0.0))).sum() / scale
    return grad_x, grad_scale.reshape(scale.shape)


@fused(shaped_args=1, shaped_results=2)
def activation_codes(x: Tensor, upper: Tensor, signed: Tensor, bits: int, *, codes: bool,
                     index: bool) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:
    """(float codes or None, uint8 grid index or None, step, zero) of x on the activation grid (grid_codes): the
    codes where `codes`, the operand quant.direct_conv takes (code + zero_index) where `index`, in one pass."""
    k, step, zero = grid_codes(x, upper, signed, bits)
    return (k if codes else None), ((k + zero_index(bits, zero)).to(torch.uint8) if index else None), step, zero


@fused(shaped_args=3, shaped_results=1)
def input_gradients(x: Tensor, grad_codes: Tensor, codes: Tensor, grad_step: Tensor, step: Tensor, lo: Tensor,
                    upper: Tensor) -> tuple[Tensor, Tensor]:
    """(dL/dX, dL/d upper) from the op's input gradient on codes (grad_codes, scaled by grad_step = s_G * s_W)
    and the activation's float codes: interval_gradients with x_hat = codes * step on [lo, upper]. x comes first:
    the region sums in its memory order, which the exact and int8 kernels share (their grad_codes' layouts differ)."""
    return interval_gradients(grad_codes * grad_step, x.float(), codes * step, lo, upper, upper)


@fused(shaped_args=1, shaped_results=2)
def gradient_operands(codes: Tensor, zero_point: int, signed: bool) -> tuple[Tensor, Tensor | None]:
    """The gradient's codes as quant.direct_conv's uint8 operand (code + zero_point) and, where `signed`, as int8
    (quant.im2col's operand), in one pass."""
    return (codes + zero_point).to(torch.uint8), (codes.to(torch.int8) if signed else None)
