"""APT quantizers: one per quantized layer and role (W, A, G), each with its own adaptive bit-width (docs/methods.md §4).

They take the place of WeightQuantizer / ActQuantizer / GradQuantizer as the `wq`, `aq`, `gq` submodules of
QConv2d / QLinear when the QuantSpec has a `precision` policy (quant.layers), so the module swap, the parameter names
and the trainer stay as they are. The format needs no learnable interval: the power-of-two scale follows max|x|.

- W and A: the tensor is quantized to nearest in forward, straight-through in backward (the range covers max|x|,
  so nothing saturates), and, in training mode, the controller observes (shift, diff_bit).
- G: identity in forward; in backward the incoming dL/dY is quantized (stochastically by default, see
  quant.apt.AptPolicy) before the op's own backward uses it, as quant.gradient does, and the controller observes.

The controller state (quant.apt.ControllerState: bits, shift EMA, interval, countdown, updates, last diff_bit)
lives in buffers, so checkpoints restore it exactly. Per step everything stays on device: the check is a `due`
mask and torch.where, never a python branch on data. Deferred mode (DDP, docs/methods.md §1.7 and §4): the
quantizer adds [valid, shift, diff_bit] to `pending` instead, and quant.apply_deferred_updates reduces every
quantizer's row over the ranks in the same packed all-reduce as the gradient quantizers' and steps the controller
on the rank means. A tensor whose max|x| is 0 or not finite passes through unquantized and moves no state.

Check steps: diff_bit (two means over the tensor) and, for G, the round-to-nearest it is measured against are
only computed on steps where a check may happen. `checking` is a python flag, like quant.set_recording's, so a
compiled model has two graph variants (check step, plain step) and no data-dependent branch or host sync; the
trainer sets it once per step with `precision_stepper(model)(step)` from the host step count: every step during
the dense phase, then every `policy.check_every`-th step. On a plain step the quantizer only rounds (G: once,
stochastically by default) and the controller counts down and moves the shift's EMA; a layer whose check fell
due waits for the next check step (docs/methods.md §4.2). Never set, `checking` stays True: every step measures.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor

from quant.apt import AptPolicy, ControllerState, apt_shift, controller_step, diff_bit, quantize_apt
from quant.state import OptionalStateMixin
from quant.unwrap import unwrap

#: layout of AptQuantizer.pending: sums since the last apply_deferred_updates
PENDING_NAMES = ("valid", "shift", "diff_bit")
#: the re-check interval's cap before set_precision_schedule tells the quantizers how long an epoch is
DEFAULT_MAX_INTERVAL = 1000


def _shift(x: Tensor, bits: Tensor) -> tuple[Tensor, Tensor]:
    """(shift, valid) of float32 `x` at `bits`; valid is False where max|x| is 0 or not finite (then the shift is
    that of max|x| = 1, harmless: such a tensor passes through unquantized)."""
    low, high = torch.aminmax(x)  # one pass, no |x| temporary; NaN propagates into x_max
    x_max = torch.maximum(-low, high)
    valid = torch.isfinite(x_max) & (x_max > 0)
    return apt_shift(torch.where(valid, x_max, 1.0), bits), valid


def _observe(state: ControllerState, pending: Tensor, shift: Tensor, diff: Tensor | None, valid: Tensor,
             policy: AptPolicy, deferred: bool, dense_steps: int, max_interval: int) -> None:
    """Step the controller in place, or (deferred) leave this rank's measurement in `pending`; `diff` None: this
    step measured no diff_bit (a plain step; deferred: NaN in its slot, which controller_step reads as none)."""
    if deferred:
        zero = torch.zeros_like(shift)
        measured = torch.full_like(shift, math.nan) if diff is None else diff
        pending.add_(torch.stack([valid.to(zero.dtype), torch.where(valid, shift, zero),
                                  torch.where(valid, measured, zero)]))
        return
    new = controller_step(state, shift, diff, valid, policy, dense_steps=dense_steps, max_interval=max_interval)
    for buffer, value in zip(state, new):
        buffer.copy_(value)


class _StraightThrough(torch.autograd.Function):
    """x_hat in forward, the incoming gradient unchanged in backward (the format covers max|x|: no saturation)."""

    @staticmethod
    def forward(ctx, x: Tensor, shift: Tensor, bits: Tensor, valid: Tensor, grid: str) -> Tensor:
        xf = x.float()  # float32 grid arithmetic under bf16 autocast
        return torch.where(valid, quantize_apt(xf, shift, bits, grid=grid), xf).to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None, None, None, None


class _QuantizeGradientApt(torch.autograd.Function):
    """Identity forward; backward quantizes dL/dY at the layer's current G bits and steps its controller.

    State tensors ride on ctx (as in quant.gradient): they are mutated in backward.
    """

    @staticmethod
    def forward(ctx, y: Tensor, pending: Tensor, bits: Tensor, shift_ema: Tensor, interval: Tensor,
                countdown: Tensor, updates: Tensor, last_diff: Tensor, policy: AptPolicy, deferred: bool,
                dense_steps: int, max_interval: int, checking: bool) -> Tensor:
        ctx.state = ControllerState(bits, shift_ema, interval, countdown, updates, last_diff)
        ctx.pending, ctx.policy, ctx.deferred, ctx.checking = pending, policy, deferred, checking
        ctx.dense_steps, ctx.max_interval = dense_steps, max_interval
        return y.clone()  # not a view: an in-place op after the layer must stay legal (see quant.gradient)

    @staticmethod
    def backward(ctx, g_out: Tensor):
        g = g_out.float()  # float32 grid arithmetic under bf16 autocast
        bits = ctx.state.bits
        shift, valid = _shift(g, bits)
        stochastic = ctx.policy.stochastic_grad
        g_hat = quantize_apt(g, shift, bits, stochastic=stochastic)
        diff = None
        if ctx.checking:  # diff_bit's reference is round-to-nearest, whatever the rounding (quant.apt.AptPolicy)
            diff = diff_bit(g, quantize_apt(g, shift, bits) if stochastic else g_hat)
        g_hat = torch.where(valid, g_hat, g)
        _observe(ctx.state, ctx.pending, shift, diff, valid, ctx.policy, ctx.deferred, ctx.dense_steps,
                 ctx.max_interval)
        return (g_hat.to(g_out.dtype),) + (None,) * 12


class AptQuantizer(OptionalStateMixin, nn.Module):
    """W or A quantizer with an adaptive bit-width; state in buffers (quant.apt.ControllerState's fields).

    `deferred` (quant.set_deferred_updates), `dense_steps` and `max_interval` (set_precision_schedule) are python
    attributes: torch.compile specialises on them, and they are set once per run. `checking`
    (set_precision_step) is a python flag too, with two values: two graph variants. `pending` is a plain tensor,
    not a buffer, for the reason given in quant.gradient.GradQuantizer (DDP's broadcast_buffers).
    """

    def __init__(self, role: str, bits: int, policy: AptPolicy, device=None, *, grid: str = "symmetric") -> None:
        super().__init__()
        self.role, self.policy, self.grid = role, policy, grid  # grid: the weights' (quant.weight_grid)
        self.register_buffer("bits", torch.tensor(float(bits), device=device))
        for name in ControllerState._fields[1:]:
            self.register_buffer(name, torch.zeros((), device=device))
        self.deferred = False
        self.dense_steps, self.max_interval = 0, DEFAULT_MAX_INTERVAL
        self.checking = True
        self.pending = torch.zeros(len(PENDING_NAMES), device=device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.pending = fn(self.pending)
        return self

    def controller_state(self) -> ControllerState:
        return ControllerState(*(getattr(self, name) for name in ControllerState._fields))

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            shift, valid = _shift(x.detach().float(), self.bits)
        x_hat = _StraightThrough.apply(x, shift, self.bits, valid, self.grid)
        if self.training:
            with torch.no_grad():
                diff = diff_bit(x.detach().float(), x_hat.detach().float()) if self.checking else None
                _observe(self.controller_state(), self.pending, shift, diff, valid, self.policy, self.deferred,
                         self.dense_steps, self.max_interval)
        return x_hat

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
        return _QuantizeGradientApt.apply(y, self.pending, *self.controller_state(), self.policy, self.deferred,
                                          self.dense_steps, self.max_interval, self.checking)


def named_apt_quantizers(model: nn.Module) -> list[tuple[str, AptQuantizer]]:
    """(layer name, quantizer) for every APT quantizer, in module order; the role is `quantizer.role`."""
    model = unwrap(model)
    return [(name.rpartition(".")[0], m) for name, m in model.named_modules() if isinstance(m, AptQuantizer)]


def set_precision_schedule(model: nn.Module, *, steps_per_epoch: int, epochs: int) -> None:
    """Tell every APT quantizer the run's length: checks every step for the first `dense_fraction` of the
    training steps, and a re-check interval of at most one epoch (docs/methods.md §4). No-op without APT."""
    for _, q in named_apt_quantizers(model):
        q.dense_steps = math.ceil(q.policy.dense_fraction * steps_per_epoch * epochs)
        q.max_interval = max(1, steps_per_epoch)


def is_check_step(step: int, *, dense_steps: int, check_every: int) -> bool:
    """Whether training step `step` (0-based, the host's count) measures diff_bit: every step of the dense phase,
    then every `check_every`-th step."""
    return step < dense_steps or step % check_every == 0


def precision_stepper(model: nn.Module) -> Callable[[int], None]:
    """`step_fn(step)`, to call before the forward of training step `step` (0-based; a resumed run passes its
    restored count): tells each APT quantizer whether this step measures diff_bit (a check step) or only quantizes
    (see the module notes). Python flags only, no host sync; a compiled model sees two values of them.

    The quantizers are found once, here; only those with check_every > 1 ever change their flag, so without them
    (no APT, or the default check_every=1) `step_fn` does nothing and the training loop walks no modules."""
    cadenced = [q for _, q in named_apt_quantizers(model) if q.policy.check_every > 1]

    def step_fn(step: int) -> None:
        for q in cadenced:
            q.checking = is_check_step(step, dense_steps=q.dense_steps, check_every=q.policy.check_every)

    return step_fn


def set_precision_step(model: nn.Module, step: int) -> None:
    """precision_stepper(model)(step), for a single call (tests, benchmarks); the trainer keeps one stepper."""
    precision_stepper(model)(step)
