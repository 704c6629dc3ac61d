"""Adaptive precision training, APT (Zhang et al., arXiv 1911.00361 / CVPR 2020; docs/methods.md §4): the pure part.

The number format, the error statistic and the precision controller as functions of tensors, with the controller's
hyper-parameters in one frozen `AptPolicy`. No modules, no state: the per-layer state lives in the buffers of
quant.apt_layers.AptQuantizer, and every function here is element-wise in it, so one call updates one quantizer
(0-dim tensors) or every quantizer of a model at once (vectors, quant.sync.apply_deferred_updates under DDP).
Bit-widths are float tensors, not python ints: a promotion changes a buffer, never the traced graph.

    format     s = ceil(log2(max|x| / (2^(n-1) - 1))),   x_hat = clamp(round(x / 2^s), -(2^(n-1)-1), 2^(n-1)-1) * 2^s
               (weights on the "signed" grid, quant.weight_grid: clamp from -2^(n-1), 2^n codes)
    statistic  diff_bit = log2(|mean|x| - mean|x_hat|| / mean|x| + 1)
    check      while diff_bit(n) > threshold and n < max: n <- next candidate, m_s <- m_s - (its bits - n)
               s <- the shift of max|x| at the final n (held until the next check)
               I = clamp(round(beta / diff - gamma), 1, one epoch),  diff = max(a |s - m_s|, d diff_bit^2)
               (every step in the dense phase; one epoch after the adaptive epochs)
    every step m_s <- (1 - a) m_s + a s;  a value beyond the held range re-derives s from that step's max|x|

A measurement (`Measurement`) is what one step saw: max|x|'s shift at every candidate (cheap, from one max) and,
on check steps, diff_bit at every candidate (NaN on the other steps), so that a check can run the promotion loop
as one vectorised choice; and whether the held shift overflowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from quant.primitives import round_nearest, round_stochastic

MIN_BITS, MAX_BITS = 2, 24  # 24: float32 holds every value of a 24-bit fixed-point grid exactly


def apt_shift(x_max: Tensor, bits: Tensor | float) -> Tensor:
    """Power-of-two exponent s = ceil(log2(max|x| / (2^(n-1) - 1))): the smallest scale 2^s that covers max|x|."""
    limit = torch.exp2(bits - 1) - 1 if isinstance(bits, Tensor) else 2.0 ** (bits - 1) - 1
    shift = torch.ceil(torch.log2(x_max / limit))
    # float32 log2 can land one low near a power of two (e.g. 2^17 / (2^23 - 1) at 24 bits); limit * 2^s is exact
    return torch.where(x_max > limit * torch.exp2(shift), shift + 1, shift)


def quantize_apt(x: Tensor, shift: Tensor, bits: Tensor | float, *, stochastic: bool = False,
                 noise: Tensor | None = None, grid: str = "symmetric") -> Tensor:
    """x on the n-bit grid k * 2^s, |k| <= 2^(n-1) - 1 (round to nearest, or stochastically); saturates.
    grid "signed": k from -2^(n-1) (2^n codes, quant.primitives.weight_levels)."""
    limit = torch.exp2(bits - 1) - 1 if isinstance(bits, Tensor) else x.new_tensor(2.0 ** (bits - 1) - 1)
    scale = torch.exp2(shift)
    t = x / scale
    k = round_stochastic(t, noise) if stochastic else round_nearest(t)
    return torch.minimum(torch.maximum(k, -limit - (1.0 if grid == "signed" else 0.0)), limit) * scale


def diff_bit(x: Tensor, x_hat: Tensor) -> Tensor:
    """log2(|mean|x| - mean|x_hat|| / mean|x| + 1): the relative magnitude the format loses, in bits (0 if x is 0)."""
    mean = x.abs().mean()
    lost = (mean - x_hat.abs().mean()).abs() / torch.where(mean > 0, mean, 1.0)
    return torch.log2(lost + 1)


def overflows(x_max: Tensor, shift: Tensor, bits: Tensor) -> Tensor:
    """Whether max|x| lies beyond the largest value of the format (s, n) by more than half a step (it saturates)."""
    return x_max > (torch.exp2(bits - 1) - 0.5) * torch.exp2(shift)


@dataclass(frozen=True, kw_only=True)
class AptPolicy:
    """Hyper-parameters of the precision controller (docs/methods.md §4), one object for every layer and role.

    The defaults are the APT paper's where its text says it and a public re-implementation's otherwise
    (docs/methods.md §4 gives the source of each). candidates: the bit-widths a layer moves through, ascending; every
    quantized role starts at the QuantSpec's bits (configs/quant/apt.yaml: 8), which must be one of them.
    threshold: diff_bit above which a check promotes (and keeps promoting: the loop). a, beta, gamma, d: the
    re-check interval's constants. shift_momentum: momentum of the shift's EMA m_s, moved every step (1 - a: the
    re-implementation uses a as the EMA weight). dense_fraction: every step is a check during this fraction of the
    first epoch. adaptive_epochs: epochs in which the interval adapts (capped at one epoch); afterwards one check
    per epoch; None: adaptive for the whole run. stochastic_grad: gradients rounded stochastically (the project's
    other quantizers) instead of to nearest (the paper); diff_bit is always measured with round-to-nearest.
    hold_shift: the shift is recomputed at checks only (the paper; a value that would saturate re-derives it from
    that step's max|x|), or every step from max|x| (False: this project's APT before 2026-12).
    """

    candidates: tuple[int, ...] = (8, 16, 24)
    threshold: float = 0.03
    a: float = 0.04
    beta: float = 0.1
    gamma: float = 2.0
    d: float = 100.0
    shift_momentum: float = 0.96
    dense_fraction: float = 0.01
    adaptive_epochs: int | None = 1
    stochastic_grad: bool = False
    hold_shift: bool = True

    def __post_init__(self) -> None:
        cands = self.candidates
        if not isinstance(cands, (tuple, list)) or not cands or any(type(c) is not int for c in cands) \
                or list(cands) != sorted(set(cands)) or not MIN_BITS <= cands[0] <= cands[-1] <= MAX_BITS:
            raise ValueError(f"quant.precision.candidates={cands!r} is invalid: use ascending distinct integers "
                             f"in {MIN_BITS}..{MAX_BITS}, e.g. [8, 16, 24]")
        object.__setattr__(self, "candidates", tuple(cands))
        for name in ("threshold", "a", "beta", "gamma", "d"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"quant.precision.{name}={value!r} is invalid: use a number >= 0")
        for name in ("shift_momentum", "dense_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"quant.precision.{name}={value!r} is invalid: use a number in [0, 1)")
        epochs = self.adaptive_epochs
        if epochs is not None and (type(epochs) is not int or epochs < 0):
            raise ValueError(f"quant.precision.adaptive_epochs={epochs!r} is invalid: use an integer >= 0, or null "
                             f"(adaptive for the whole run)")
        for name in ("stochastic_grad", "hold_shift"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"quant.precision.{name}={getattr(self, name)!r} is invalid: use true or false")

    @property
    def label(self) -> str:
        """Bits label of a run: `apt8-24` (lowest-highest candidate), `apt8` when the bits cannot move."""
        lo, hi = self.candidates[0], self.candidates[-1]
        return f"apt{lo}" if lo == hi else f"apt{lo}-{hi}"


@dataclass(frozen=True)
class Schedule:
    """When checks happen, in training steps (quant.apt_layers.set_precision_schedule sets it from the run's
    length): every step below `dense_steps`, adaptive intervals of at most `epoch_steps` below `adaptive_steps`,
    then one check every `epoch_steps`."""

    dense_steps: int = 0
    adaptive_steps: float = math.inf
    epoch_steps: int = 1000


class ControllerState(NamedTuple):
    """One quantizer's controller state (0-dim tensors) or every quantizer's (vectors); saved as buffers."""

    bits: Tensor       # current bit-width n (a candidate)
    shift: Tensor      # the held shift s: the format's scale 2^s between checks
    shift_ema: Tensor  # m_s, EMA of the shift
    interval: Tensor   # I chosen at the last check
    countdown: Tensor  # steps until the next check; a check is due when <= 1 (below 1: overdue, waits for a check step)
    updates: Tensor    # controller updates so far (the schedule counts them)
    diff_bit: Tensor   # the last measured diff_bit (logged)


class Measurement(NamedTuple):
    """What one step saw of one tensor (0-dim / (C,)) or of every quantizer's ((Q,) / (Q, C)), C = candidates."""

    valid: Tensor     # max|x| finite and > 0 (otherwise the tensor passed through and nothing moves)
    shifts: Tensor    # (..., C) the shift of max|x| at each candidate
    diffs: Tensor     # (..., C) diff_bit at each candidate, each on its own shift; NaN: not measured (a plain step)
    overflow: Tensor  # max|x| beyond the held format (hold_shift)


def at_bits(values: Tensor, bits: Tensor, candidates: tuple[int, ...]) -> Tensor:
    """values[..., i] where candidates[i] == bits (the last column where bits is no candidate)."""
    out = values[..., -1]
    for i, c in reversed(list(enumerate(candidates[:-1]))):
        out = torch.where(bits == c, values[..., i], out)
    return out


def promoted_bits(bits: Tensor, diffs: Tensor, policy: AptPolicy) -> Tensor:
    """The promotion loop as one choice: the smallest candidate >= bits whose diff_bit is within the threshold,
    else the largest (`while diff_bit > threshold and n < max: n <- next`)."""
    out = torch.full_like(bits, float(policy.candidates[-1]))
    for i, c in reversed(list(enumerate(policy.candidates[:-1]))):
        out = torch.where((bits <= c) & (diffs[..., i] <= policy.threshold), float(c), out)
    return torch.maximum(out, bits)


def recheck_interval(shift: Tensor, shift_ema: Tensor, diff: Tensor, policy: AptPolicy, max_interval: int) -> Tensor:
    """I = clamp(round(beta / max(a |s - m_s|, d diff_bit^2) - gamma), 1, max_interval); a zero diff gives the cap."""
    change = torch.maximum(policy.a * (shift - shift_ema).abs(), policy.d * diff.square())
    return torch.round(policy.beta / change - policy.gamma).clamp(1, max_interval)


def is_due(state: ControllerState, schedule: Schedule) -> Tensor:
    """Whether a check is due at this step: in the dense phase, or the countdown has run out."""
    return (state.countdown <= 1) | (state.updates < schedule.dense_steps)


def controller_step(state: ControllerState, seen: Measurement, policy: AptPolicy, schedule: Schedule) -> ControllerState:
    """The state after one step that saw `seen` (where `seen.valid`; elsewhere nothing changes).

    A check happens where one is due and the step measured diff_bit: the promotion loop (lowering m_s by the bits
    gained), the held shift from max|x| at the new bits, the next interval (1 in the dense phase, adaptive until
    `adaptive_steps`, one epoch after). Otherwise the countdown runs down; with `hold_shift` the shift stays unless
    the tensor overflowed it (then it is re-derived from this step's max|x| and the layer is due at the next check
    step), without it the shift follows max|x| every step. The EMA moves every step, towards the shift the format
    has after the step; it starts at the first shift.
    """
    cands = policy.candidates
    measured = ~torch.isnan(seen.diffs).any(-1)
    due = is_due(state, schedule) & measured
    first = state.updates == 0
    current_shift = at_bits(seen.shifts, state.bits, cands)
    bits = promoted_bits(state.bits, seen.diffs, policy)
    checked_shift, checked_diff = at_bits(seen.shifts, bits, cands), at_bits(seen.diffs, bits, cands)
    ema = torch.where(first, checked_shift, state.shift_ema - (bits - state.bits))  # m_s -= 8 per promotion
    interval = torch.where(state.updates < schedule.adaptive_steps,
                           recheck_interval(checked_shift, ema, checked_diff, policy, schedule.epoch_steps),
                           float(schedule.epoch_steps))
    interval = torch.where(state.updates < schedule.dense_steps, 1.0, interval)
    moved = seen.overflow & ~first if policy.hold_shift else torch.ones_like(first)
    plain_shift = torch.where(moved | first, current_shift, state.shift)
    shift = torch.where(due, checked_shift, plain_shift)
    ema = torch.where(due, ema, torch.where(first, plain_shift, state.shift_ema))
    m = policy.shift_momentum
    countdown = state.countdown - 1
    if policy.hold_shift:
        countdown = torch.where(seen.overflow, countdown.clamp(max=1.0), countdown)
    new = ControllerState(bits=torch.where(due, bits, state.bits), shift=shift,
                          shift_ema=m * ema + (1 - m) * shift,
                          interval=torch.where(due, interval, state.interval),
                          countdown=torch.where(due, interval, countdown), updates=state.updates + 1,
                          diff_bit=torch.where(due, checked_diff, state.diff_bit))
    return ControllerState(*(torch.where(seen.valid, n, o) for n, o in zip(new, state)))
