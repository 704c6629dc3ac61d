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

from quant.primitives import grid_index, quantize_to_grid, unsigned_levels
from quant.state import OptionalStateMixin


def _grid(upper: Tensor, signed: Tensor | float, bits: int) -> tuple[Tensor, Tensor, Tensor | float]:
    """(lo, step, levels) of the symmetric (signed=1) or unsigned (signed=0) grid ending at `upper`.

    `signed` is a 0/1 number, possibly a buffer decided on device, so one traced graph serves both grids.
    """
    lo = -upper * signed
    levels = unsigned_levels(bits) - signed  # signed: 2^b - 2 steps, D = 2u / (2^b - 2) (docs/methods.md §1.2)
    return lo, (upper - lo) / levels, levels


class _FakeQuantize(torch.autograd.Function):
    """x_hat = nearest value of the (lo, step) grid; straight-through in range, learnable upper bound."""

    @staticmethod
    def forward(ctx, x: Tensor, upper: Tensor, signed: Tensor | float, bits: int) -> Tensor:
        lo, step, levels = _grid(upper, signed, bits)
        x_hat = quantize_to_grid(x.float(), lo, step, levels).to(x.dtype)  # float32 math under bf16 autocast
        ctx.save_for_backward(x, x_hat, upper, lo)
        return x_hat

    @staticmethod
    def backward(ctx, g: Tensor):
        x, x_hat, upper, lo = ctx.saved_tensors
        inside = (x >= lo) & (x <= upper)
        grad_x = torch.where(inside, g, 0.0)
        grad_upper = (g * (x_hat - torch.where(inside, x, 0.0))).sum() / upper
        return grad_x, grad_upper.reshape(upper.shape), None, None


def fake_quantize(x: Tensor, upper: Tensor, signed: Tensor | float, bits: int) -> Tensor:
    """Quantize `x` to a `bits`-bit grid ending at `upper` (symmetric if `signed`), differentiable in x and upper."""
    return _FakeQuantize.apply(x, upper.abs(), signed, bits)


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
        return f"bits={self.bits}"


class WeightQuantizer(_IntervalQuantizer):
    """Symmetric per-tensor weight quantizer, learnable s_W (docs/methods.md §1.4)."""

    def __init__(self, bits: int, device=None) -> None:
        super().__init__(bits, device)
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
        return fake_quantize(w, self.scale, 1.0, self.bits)

    @torch.no_grad()
    def codes(self, w: Tensor) -> Tensor:
        """The integer code of every weight, its index `k` in `[0, 2^b - 2]` on the grid under the current s_W
        (as a float tensor): what `forward` rounds `w` to is `-s_W + k * D`. Transition-rate scheduling counts
        how many of these change per step (docs/methods.md §3.1)."""
        lo, step, levels = _grid(self.scale.abs(), 1.0, self.bits)
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
