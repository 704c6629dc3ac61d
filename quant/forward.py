"""Weight and activation fake-quantization with a learnable interval and a straight-through estimator.

LBT paper (Kim et al., ECCV 2024), docs/methods.md §1.4, following the official code (cvlab-yonsei/LBT,
models/modules.py):
- weights: symmetric grid, 2^b - 1 values in [-s_W, s_W], s_W initialised to 3 * std(W);
- activations: unsigned grid, 2^b values in [0, u_A], u_A initialised to 3 * std(x) / sqrt(1 - 2/pi); when the
  first batch has negative inputs the grid is symmetric in [-u_A, u_A] and u_A = 3 * std(x) (official code).
Both intervals are trained (by their own Adam in the trainer). Gradients (QIL/LSQ-style, what autograd gives for
`u * round(clamp(x/u))` with a straight-through round):
  dL/dx = g where x is inside the range, 0 where it saturates;
  dL/du = sum(g * (x_hat - x * inside)) / u      (x_hat/u - x/u inside, +-1 or 0 where clipped).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from quant.fused import fused
from quant.primitives import grid_index, quantize_to_grid, unsigned_levels, weight_levels
from quant.state import OptionalStateMixin


def weight_grid(scale: Tensor, bits: int, grid: str) -> tuple[Tensor, Tensor, int]:
    """(lo, step, levels) of the weight grid `grid` with scale s_W: -s_W + k * s_W / zero (quant.primitives)."""
    levels, zero = weight_levels(bits, grid)
    return -scale, scale / zero, levels


class _FakeQuantize(torch.autograd.Function):
    """x_hat = nearest value of the grid lo + k*step, k in [0, levels], whose every value is proportional to the
    learnable scale s: lo = lo_unit * s, step = s * step_mul / step_div (step_div None: levels), top value
    top_unit * s; straight-through in range. (step as `s * mul / div`, the old `(u - lo) / levels`, keeps the
    numerics bit for bit; one tensor passed twice would break a compiled graph, hence None.)

    Since every grid value is proportional to s, dL/ds = sum(g * (x_hat - x * inside)) / s on any such grid.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, lo_unit: Tensor | float, top_unit: float,
                step_mul: Tensor | float, step_div: float | None, levels: Tensor | float) -> Tensor:
        x_hat, lo = _fake_quantize_values(x, scale, lo_unit, step_mul, step_div, levels)
        ctx.save_for_backward(x, x_hat, scale, lo)
        ctx.top_unit = top_unit
        return x_hat

    @staticmethod
    def backward(ctx, g: Tensor):
        x, x_hat, scale, lo = ctx.saved_tensors
        grad_x, grad_scale = _fake_quantize_grads(x, x_hat, g, scale, lo, ctx.top_unit)
        return grad_x, grad_scale, None, None, None, None, None


@fused(shaped_args=1, shaped_results=1)
def _fake_quantize_values(x: Tensor, scale: Tensor, lo_unit: Tensor | float, step_mul: Tensor | float,
                          step_div: float | None, levels: Tensor | float) -> tuple[Tensor, Tensor]:
    """(x_hat, lo): _FakeQuantize's forward, one fused region in eager mode (quant.fused)."""
    lo, step = scale * lo_unit, scale * step_mul / (levels if step_div is None else step_div)
    return quantize_to_grid(x.float(), lo, step, levels).to(x.dtype), lo  # float32 math under bf16 autocast


@fused(shaped_args=3, shaped_results=1)
def _fake_quantize_grads(x: Tensor, x_hat: Tensor, g: Tensor, scale: Tensor, lo: Tensor,
                         top_unit: float) -> tuple[Tensor, Tensor]:
    """(dL/dx, dL/ds): straight-through in [lo, top], the scale's gradient; one fused region in eager mode."""
    inside = (x >= lo) & (x <= (scale if top_unit == 1.0 else scale * top_unit))
    grad_x = torch.where(inside, g, 0.0)
    grad_scale = (g * (x_hat - torch.where(inside, x, 0.0))).sum() / scale
    return grad_x, grad_scale.reshape(scale.shape)


def fake_quantize(x: Tensor, upper: Tensor, signed: Tensor | float, bits: int) -> Tensor:
    """Quantize `x` to a `bits`-bit grid ending at `upper` (symmetric if `signed`), differentiable in x and upper.

    Unsigned (signed=0): 2^b values in [0, u]; symmetric (signed=1): 2^b - 1 values in [-u, u], D = 2u / (2^b - 2)
    (docs/methods.md §1.2). `signed` may be a 0/1 buffer decided on device: one traced graph serves both grids.
    """
    levels = unsigned_levels(bits) - signed
    return _FakeQuantize.apply(x, upper.abs(), -signed, 1.0, 1 + signed, None, levels)


def fake_quantize_weight(w: Tensor, scale: Tensor, bits: int, grid: str) -> Tensor:
    """Quantize `w` to the weight grid `grid` with scale s_W (quant.primitives.weight_levels), differentiable in
    w and s_W."""
    levels, zero = weight_levels(bits, grid)
    return _FakeQuantize.apply(w, scale.abs(), -1.0, (levels - zero) / zero, 1.0, zero, levels)


class _IntervalQuantizer(OptionalStateMixin, nn.Module):
    """Shared lazy initialisation: the interval is set from the first tensor seen, once (then saved with it).

    The python flag mirrors the `initialized` buffer so the hot path has no host sync; it is restored from the
    buffer when a checkpoint loads. The one-off initialisation is left to eager mode: `warmup_grad_intervals`
    runs the first batch eagerly, so a compiled step never traces it.
    """

    def __init__(self, bits: int, device=None) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool, device=device))
        self.needs_init = True  # public: the warm-up, the cross-rank sync and the integer kernels read it

    def _after_load(self) -> None:
        self.needs_init = not bool(self.initialized)

    def extra_repr(self) -> str:
        return f"bits={self.bits}" + (f", grid={self.grid}" if hasattr(self, "grid") else "")


class WeightQuantizer(_IntervalQuantizer):
    """Per-tensor weight quantizer, learnable s_W (docs/methods.md §1.4) on the grid `grid`: "symmetric" (LBT's,
    2^b - 1 values) or "signed" (LSQ's and the TRS paper's, 2^b values), quant.primitives.weight_levels."""

    def __init__(self, bits: int, device=None, *, grid: str = "symmetric") -> None:
        super().__init__(bits, device)
        weight_levels(bits, grid)  # a bad grid name is one line here
        self.grid = grid
        self.scale = nn.Parameter(torch.ones((), device=device))

    @torch.compiler.disable
    @torch.no_grad()
    def _initialize(self, w: Tensor) -> None:
        self.scale.copy_(3 * w.float().std())
        self.initialized.fill_(True)
        self.needs_init = False

    def forward(self, w: Tensor) -> Tensor:
        if self.needs_init:
            self._initialize(w)
        return fake_quantize_weight(w, self.scale, self.bits, self.grid)

    @torch.no_grad()
    def codes(self, w: Tensor) -> Tensor:
        """The integer code of every weight, its index `k` in `[0, levels]` on the grid under the current s_W
        (as a float tensor): what `forward` rounds `w` to is `lo + k * step` (weight_grid). Transition-rate
        scheduling counts how many of these change per step (docs/methods.md §3.1)."""
        lo, step, levels = weight_grid(self.scale.abs(), self.bits, self.grid)
        return grid_index(w.float(), lo, step, levels)


class ActQuantizer(_IntervalQuantizer):
    """Per-tensor activation quantizer, learnable u_A; unsigned unless the first batch had negative inputs."""

    def __init__(self, bits: int, device=None) -> None:
        super().__init__(bits, device)
        self.upper = nn.Parameter(torch.ones((), device=device))
        self.register_buffer("signed", torch.zeros((), device=device))  # 0.0 or 1.0, decided on the first batch

    @torch.compiler.disable
    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        signed = (x.amin() < 0).float()
        std = x.float().std()
        # Official code: 3 std for signed inputs; for ReLU outputs, std of the half-normal's parent (sqrt(1-2/pi)).
        self.upper.copy_(3 * std * torch.where(signed > 0, 1.0, 1 / math.sqrt(1 - 2 / math.pi)))
        self.signed.copy_(signed)
        self.initialized.fill_(True)
        self.needs_init = False

    def forward(self, x: Tensor) -> Tensor:
        if self.needs_init:
            self._initialize(x)
        return fake_quantize(x, self.upper, self.signed, self.bits)
