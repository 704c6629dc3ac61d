"""APT quantizers: one per quantized layer and role (W, A, G), each with its own adaptive bit-width (docs/methods.md §4).

They take the place of WeightQuantizer / ActQuantizer / GradQuantizer as the `wq`, `aq`, `gq` submodules of
QConv2d / QLinear when the QuantSpec has a `precision` policy (quant.layers), so the module swap, the parameter names
and the trainer stay as they are. The format needs no learnable interval: its power-of-two scale comes from max|x|.

- W and A: rounded to nearest in forward, straight-through in backward; in training mode the controller observes.
- G: identity in forward; in backward the incoming dL/dY is quantized (to nearest by default, quant.apt.AptPolicy)
  before the op's own backward uses it, as quant.gradient does, and the controller observes.

Check steps and plain steps. `checking` is a python flag (two graph variants under torch.compile, no data-dependent
branch) that the trainer sets before each step through `CheckSchedule`, from a host count of steps:
- a check step measures max|x| and diff_bit at every candidate (one quantization each) and, where the layer's check
  is due, promotes, re-derives the held shift and picks the next interval; the output uses the checked format;
- a plain step quantizes with the HELD shift (no max|x| before rounding: one pass over the tensor) and counts down.
  It still reduces max|x| in the same pass, only to notice a value the held format saturates: then the shift is
  re-derived from that max for the next step and the layer is due at the next check step.
Only steps where some layer's check is due are check steps. The host learns when that is by reading the smallest
countdown once after each check step (one host sync per check step, none on plain steps); countdowns only run down
in between, and every rank holds the same state (DDP below), so every rank picks the same steps.

The controller state (quant.apt.ControllerState) lives in buffers, so checkpoints restore it exactly; per step it
moves by torch.where on device. Deferred mode (DDP, docs/methods.md §4.3): the quantizer adds its measurement row
[valid, overflow, shifts (C), diff_bits (C)] to `pending` instead, and quant.apply_deferred_updates reduces every
quantizer's row over the ranks in the same packed all-reduce as the gradient quantizers' and steps the
controllers on the rank means (the shift's mean rounded up). A tensor whose max|x| is 0 or not finite moves no
state; on a check step it passes through unquantized, on a plain step its non-finite values do.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from quant.apt import (AptPolicy, ControllerState, Measurement, Schedule, apt_shift, at_bits, controller_step,
                       diff_bit, is_due, overflows, promoted_bits, quantize_apt)
from quant.state import OptionalStateMixin
from quant.unwrap import unwrap


def pending_width(policy: AptPolicy) -> int:
    """Length of an AptQuantizer's pending row: valid, overflow, then C shifts and C diff_bits."""
    return 2 + 2 * len(policy.candidates)


def _max_abs(x: Tensor) -> tuple[Tensor, Tensor]:
    """(max|x|, valid) of float32 `x`; valid is False where max|x| is 0 or not finite (max|x| is then 1)."""
    low, high = torch.aminmax(x)  # one pass, no |x| temporary; NaN propagates
    x_max = torch.maximum(-low, high)
    valid = torch.isfinite(x_max) & (x_max > 0)
    return torch.where(valid, x_max, 1.0), valid


def measure(x: Tensor, state: ControllerState, policy: AptPolicy, schedule: Schedule, checking: bool,
            *, stochastic: bool = False, grid: str = "symmetric") -> tuple[Tensor, Measurement]:
    """Quantize float32 `x` for one training step and say what the controller should see (see the module notes)."""
    cands = policy.candidates
    x_max, valid = _max_abs(x)
    shifts = torch.stack([apt_shift(x_max, float(c)) for c in cands])  # (C,): scalars from one reduction
    overflow = overflows(x_max, state.shift, state.bits) & valid
    first = state.updates == 0
    if not checking:
        nan = torch.full_like(shifts, math.nan)
        if policy.hold_shift:  # the held format: rounding does not wait for max|x|
            x_hat = quantize_apt(x, state.shift, state.bits, stochastic=stochastic, grid=grid)
            return torch.where(torch.isfinite(x), x_hat, x), Measurement(valid, shifts, nan, overflow)
        shift = at_bits(shifts, state.bits, cands)
        x_hat = quantize_apt(x, shift, state.bits, stochastic=stochastic, grid=grid)
        return torch.where(valid, x_hat, x), Measurement(valid, shifts, nan, overflow)
    diffs = torch.stack([diff_bit(x, quantize_apt(x, shifts[i], float(c), grid=grid))
                         for i, c in enumerate(cands)])  # (C,), each against round-to-nearest
    due = is_due(state, schedule)
    bits = torch.where(due, promoted_bits(state.bits, diffs, policy), state.bits)
    moved = due | first | overflow | (not policy.hold_shift)  # as quant.apt.controller_step moves the shift
    shift = torch.where(moved, at_bits(shifts, bits, cands), state.shift)
    x_hat = quantize_apt(x, shift, bits, stochastic=stochastic, grid=grid)
    return torch.where(valid, x_hat, x), Measurement(valid, shifts, diffs, overflow)


def observe(state: ControllerState, pending: Tensor, seen: Measurement, policy: AptPolicy, deferred: bool,
            schedule: Schedule) -> None:
    """Step the controller in place, or (deferred) add this rank's measurement to `pending`."""
    if deferred:
        zero = torch.zeros_like(seen.shifts)
        pending.add_(torch.cat([torch.stack([seen.valid, seen.overflow]).to(zero.dtype),
                                torch.where(seen.valid, seen.shifts, zero), torch.where(seen.valid, seen.diffs, zero)]))
        return
    for buffer, value in zip(state, controller_step(state, seen, policy, schedule)):
        buffer.copy_(value)


class _StraightThrough(torch.autograd.Function):
    """x_hat in forward, the incoming gradient unchanged in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, x_hat: Tensor) -> Tensor:
        return x_hat.to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None


class _QuantizeGradientApt(torch.autograd.Function):
    """Identity forward; backward quantizes dL/dY at the layer's current G format and steps its controller.

    State tensors ride on ctx (as in quant.gradient): they are mutated in backward.
    """

    @staticmethod
    def forward(ctx, y: Tensor, pending: Tensor, bits: Tensor, shift: Tensor, shift_ema: Tensor, interval: Tensor,
                countdown: Tensor, updates: Tensor, last_diff: Tensor, policy: AptPolicy, schedule: Schedule,
                deferred: bool, checking: bool) -> Tensor:
        ctx.state = ControllerState(bits, shift, shift_ema, interval, countdown, updates, last_diff)
        ctx.pending, ctx.policy, ctx.schedule, ctx.deferred, ctx.checking = pending, policy, schedule, deferred, checking
        return y.clone()  # not a view: an in-place op after the layer must stay legal (see quant.gradient)

    @staticmethod
    def backward(ctx, g_out: Tensor):
        g = g_out.float()  # float32 grid arithmetic under bf16 autocast
        g_hat, seen = measure(g, ctx.state, ctx.policy, ctx.schedule, ctx.checking,
                              stochastic=ctx.policy.stochastic_grad)
        observe(ctx.state, ctx.pending, seen, ctx.policy, ctx.deferred, ctx.schedule)
        return (g_hat.to(g_out.dtype),) + (None,) * 12


class AptQuantizer(OptionalStateMixin, nn.Module):
    """W or A quantizer with an adaptive bit-width; state in buffers (quant.apt.ControllerState's fields).

    `deferred` (quant.set_deferred_updates), `schedule` (set_precision_schedule) and `checking` (CheckSchedule) are
    python attributes: torch.compile specialises on them; the first two are set once per run, `checking` has two
    values. `pending` is a plain tensor, not a buffer, for the reason given in quant.gradient.GradQuantizer (DDP's
    broadcast_buffers).
    """

    def __init__(self, role: str, bits: int, policy: AptPolicy, device=None, *, grid: str = "symmetric") -> None:
        super().__init__()
        self.role, self.policy, self.grid = role, policy, grid  # grid: the weights' (quant.weight_grid)
        self.register_buffer("bits", torch.tensor(float(bits), device=device))
        for name in ControllerState._fields[1:]:
            self.register_buffer(name, torch.zeros((), device=device))
        self.deferred = False
        self.schedule = Schedule()
        self.checking = True
        self.pending = torch.zeros(pending_width(policy), device=device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.pending = fn(self.pending)
        return self

    def controller_state(self) -> ControllerState:
        return ControllerState(*(getattr(self, name) for name in ControllerState._fields))

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            xf = x.detach().float()  # float32 grid arithmetic under bf16 autocast
            if self.training:
                x_hat, seen = measure(xf, self.controller_state(), self.policy, self.schedule, self.checking,
                                      grid=self.grid)
                observe(self.controller_state(), self.pending, seen, self.policy, self.deferred, self.schedule)
            else:  # the trained format (held shift); a quantizer that never trained uses max|x|
                x_max, valid = _max_abs(xf)
                shift = apt_shift(x_max, self.bits)
                if self.policy.hold_shift:
                    shift = torch.where(self.updates > 0, self.shift, shift)
                x_hat = torch.where(valid, quantize_apt(xf, shift, self.bits, grid=self.grid), xf)
        return _StraightThrough.apply(x, x_hat)

    def extra_repr(self) -> str:
        return f"role={self.role}, candidates={self.policy.candidates}, grid={self.grid}"


class AptGradQuantizer(AptQuantizer):
    """G quantizer: quantizes dL/dY in backward; also notes the output size per sample (for the MAC cost)."""

    def __init__(self, bits: int, policy: AptPolicy, device=None) -> None:
        super().__init__("g", bits, policy, device)
        self.register_buffer("out_numel", torch.zeros((), device=device), persistent=False)

    def forward(self, y: Tensor) -> Tensor:
        self.out_numel.fill_(y[0].numel())
        if not (torch.is_grad_enabled() and y.requires_grad):
            return y
        return _QuantizeGradientApt.apply(y, self.pending, *self.controller_state(), self.policy, self.schedule,
                                          self.deferred, self.checking)


def named_apt_quantizers(model: nn.Module) -> list[tuple[str, AptQuantizer]]:
    """(layer name, quantizer) for every APT quantizer, in module order; the role is `quantizer.role`."""
    model = unwrap(model)
    return [(name.rpartition(".")[0], m) for name, m in model.named_modules() if isinstance(m, AptQuantizer)]


def set_precision_schedule(model: nn.Module, *, steps_per_epoch: int, epochs: int) -> None:
    """Tell every APT quantizer the run's length (docs/methods.md §4.2): a check every step for the first
    `dense_fraction` of the first epoch, adaptive intervals of at most one epoch during `adaptive_epochs`, then one
    check per epoch. `epochs` is the run's length (unused by the paper's schedule; kept for callers). No-op without
    APT."""
    del epochs
    for _, q in named_apt_quantizers(model):
        adaptive = q.policy.adaptive_epochs
        q.schedule = Schedule(dense_steps=math.ceil(q.policy.dense_fraction * steps_per_epoch),
                              adaptive_steps=math.inf if adaptive is None else adaptive * steps_per_epoch,
                              epoch_steps=max(1, steps_per_epoch))


class CheckSchedule:
    """Host side of the check cadence: `schedule(step)` before the forward of training step `step` (0-based, the
    host's count; a resumed run passes its restored count) sets every APT quantizer's `checking` flag.

    A step is a check step when it lies in the dense phase or some layer's check is due. The next due step is read
    from the quantizers' smallest countdown once after each check step (and once at the start): one host sync per
    check step. Without APT quantizers it does nothing."""

    def __init__(self, model: nn.Module) -> None:
        self.quantizers = [q for _, q in named_apt_quantizers(model)]
        self.next_check: int | None = None
        self.last_checking: bool | None = None  # what the flags were set to (None: not yet)

    def __call__(self, step: int) -> None:
        if not self.quantizers:
            return
        dense = step < self.quantizers[0].schedule.dense_steps
        if not dense and (self.next_check is None or self.last_checking):
            countdown = min(torch.stack([q.countdown for q in self.quantizers]).min().item(), 1e9)  # one sync
            self.next_check = step + max(int(countdown), 1) - 1
        checking = dense or step >= self.next_check
        if checking != self.last_checking:
            for q in self.quantizers:
                q.checking = checking
            self.last_checking = checking


def set_precision_step(model: nn.Module, step: int) -> None:
    """Set the `checking` flags for training step `step` from the quantizers' state (tests, benchmarks; the trainer
    keeps one CheckSchedule, which reads the state only after check steps)."""
    CheckSchedule(model)(step)
