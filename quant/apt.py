"""Adaptive precision training, APT (Zhang et al., arXiv 1911.00361 / CVPR 2020; docs/methods.md §4): the pure part.

The number format, the error statistic and the precision controller as functions of tensors, with the controller's
hyper-parameters in one frozen `AptPolicy`. No modules, no state: the per-layer state lives in the buffers of
quant.apt_layers.AptQuantizer, and every function here is element-wise in it, so one call updates one quantizer
(0-dim tensors) or every quantizer of a model at once (vectors, quant.sync.apply_deferred_updates under DDP).
Bit-widths are float tensors, not python ints: a promotion changes a buffer, never the traced graph.

    format     s = ceil(log2(max|x| / (2^(n-1) - 1))),   x_hat = clamp(round(x / 2^s), -(2^(n-1)-1), 2^(n-1)-1) * 2^s
               (weights on the "signed" grid, quant.weight_grid: clamp from -2^(n-1), 2^n codes)
    statistic  diff_bit = log2(|mean|x| - mean|x_hat|| / mean|x| + 1)
    promotion  at a check: n <- next candidate above n   if diff_bit > threshold
    re-check   I = clamp(round(beta / diff - gamma), 1, max_interval),  diff = max(a |s - m_s|, d diff_bit^2)

diff_bit is measured only on check steps (AptPolicy.check_every): on the other steps the controller gets no
measurement (diff None, or NaN from a deferred pending row) and only counts down and moves the shift's EMA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from quant.primitives import round_nearest, round_stochastic

MIN_BITS, MAX_BITS = 2, 24  # 24: float32 holds every value of a 24-bit fixed-point grid exactly


def apt_shift(x_max: Tensor, bits: Tensor) -> Tensor:
    """Power-of-two exponent s = ceil(log2(max|x| / (2^(n-1) - 1))): the smallest scale 2^s that covers max|x|."""
    return torch.ceil(torch.log2(x_max / (torch.exp2(bits - 1) - 1)))


def quantize_apt(x: Tensor, shift: Tensor, bits: Tensor, *, stochastic: bool = False,
                 noise: Tensor | None = None, grid: str = "symmetric") -> Tensor:
    """x on the n-bit grid k * 2^s, |k| <= 2^(n-1) - 1 (round to nearest, or stochastically); saturates.
    grid "signed": k from -2^(n-1) (2^n codes, quant.primitives.weight_levels)."""
    scale = torch.exp2(shift)
    limit = torch.exp2(bits - 1) - 1
    t = x / scale
    k = round_stochastic(t, noise) if stochastic else round_nearest(t)
    return torch.minimum(torch.maximum(k, -limit - (1.0 if grid == "signed" else 0.0)), limit) * scale


def diff_bit(x: Tensor, x_hat: Tensor) -> Tensor:
    """log2(|mean|x| - mean|x_hat|| / mean|x| + 1): the relative magnitude the format loses, in bits (0 if x is 0)."""
    mean = x.abs().mean()
    lost = (mean - x_hat.abs().mean()).abs() / torch.where(mean > 0, mean, 1.0)
    return torch.log2(lost + 1)


@dataclass(frozen=True, kw_only=True)
class AptPolicy:
    """Hyper-parameters of the precision controller (docs/methods.md §4), one object for every layer and role.

    candidates: the bit-widths a layer moves through, ascending; every quantized role starts at the QuantSpec's
    bits (configs/quant/apt.yaml: 8), which must be one of them. threshold: diff_bit above which a check promotes.
    a, beta, gamma, d: the re-check interval's constants, from a public reimplementation (unconfirmed in the
    paper). shift_momentum: momentum of the shift's EMA m_s, updated every step (unconfirmed). dense_fraction:
    every step is a check during this fraction of training; the interval is capped at one epoch
    (quant.apt_layers.set_precision_schedule sets both from the run's length). stochastic_grad: gradients are
    rounded stochastically (unbiased, as in the rest of the project) or to nearest (as in the paper); diff_bit
    is always measured with round-to-nearest, the format's own resolution (a stochastic round keeps
    mean|g| on average, so it would never report a loss). check_every: after the dense phase diff_bit is measured,
    and a due check held, only on every `check_every`-th training step (quant.apt_layers.set_precision_step): a
    layer whose countdown ran out is checked at the next such step, so intervals round up to multiples of it.
    1 (default) measures every step, as the method states it; larger values are a cost option (docs/methods.md
    §4.2: it saves time in eager mode, not measurably under torch.compile on CPU).
    """

    candidates: tuple[int, ...] = (8, 16, 24)
    threshold: float = 0.03
    a: float = 0.04
    beta: float = 0.1
    gamma: float = 2.0
    d: float = 100.0
    shift_momentum: float = 0.9
    dense_fraction: float = 0.01
    stochastic_grad: bool = True
    check_every: int = 1

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
        if type(self.check_every) is not int or self.check_every < 1:
            raise ValueError(f"quant.precision.check_every={self.check_every!r} is invalid: use an integer >= 1")
        if not isinstance(self.stochastic_grad, bool):
            raise ValueError(f"quant.precision.stochastic_grad={self.stochastic_grad!r} is invalid: use true or false")

    @property
    def label(self) -> str:
        """Bits label of a run: `apt8-24` (lowest-highest candidate), `apt8` when the bits cannot move."""
        lo, hi = self.candidates[0], self.candidates[-1]
        return f"apt{lo}" if lo == hi else f"apt{lo}-{hi}"


class ControllerState(NamedTuple):
    """One quantizer's controller state (0-dim tensors) or every quantizer's (vectors); saved as buffers."""

    bits: Tensor      # current bit-width n (a candidate)
    shift_ema: Tensor  # m_s, EMA of the shift
    interval: Tensor   # I chosen at the last check
    countdown: Tensor  # steps until the next check; a check is due when <= 1 (below 1: overdue, see check_every)
    updates: Tensor    # controller updates so far (the dense phase counts them)
    diff_bit: Tensor   # the last measured diff_bit (logged)


def next_candidate(bits: Tensor, candidates: tuple[int, ...]) -> Tensor:
    """The smallest candidate above `bits`, or `bits` itself at the top."""
    out = bits
    for c in reversed(candidates):
        out = torch.where(bits < c, float(c), out)
    return out


def recheck_interval(shift: Tensor, shift_ema: Tensor, diff: Tensor, policy: AptPolicy, max_interval: int) -> Tensor:
    """I = clamp(round(beta / max(a |s - m_s|, d diff_bit^2) - gamma), 1, max_interval); a zero diff gives the cap."""
    change = torch.maximum(policy.a * (shift - shift_ema).abs(), policy.d * diff.square())
    return torch.round(policy.beta / change - policy.gamma).clamp(1, max_interval)


def controller_step(state: ControllerState, shift: Tensor, diff: Tensor | None, valid: Tensor, policy: AptPolicy, *,
                    dense_steps: int, max_interval: int) -> ControllerState:
    """The state after one step that measured `shift` and `diff` (where `valid`; elsewhere nothing changes).

    A check is due when the countdown has run out or during the dense phase (the first `dense_steps` updates).
    At a check: promote if diff_bit exceeds the threshold, pick the next interval, restart the countdown.
    The shift's EMA moves every step, from the shift itself on the first one.
    `diff` None (this step measured no diff_bit, AptPolicy.check_every) or NaN (where a deferred pending row
    carries no measurement): no check happens, whatever is due stays due (the countdown keeps counting down),
    and the last diff_bit is kept; the EMA and the update count move as on any step.
    """
    shift_ema = torch.where(state.updates == 0, shift, state.shift_ema)
    m = policy.shift_momentum
    ema = m * shift_ema + (1 - m) * shift
    if diff is None:
        new = ControllerState(bits=state.bits, shift_ema=ema, interval=state.interval,
                              countdown=state.countdown - 1, updates=state.updates + 1, diff_bit=state.diff_bit)
        return ControllerState(*(torch.where(valid, n, o) for n, o in zip(new, state)))
    measured = ~torch.isnan(diff)
    due = ((state.countdown <= 1) | (state.updates < dense_steps)) & measured
    interval = recheck_interval(shift, shift_ema, diff, policy, max_interval)
    bits = torch.where(due & (diff > policy.threshold), next_candidate(state.bits, policy.candidates), state.bits)
    new = ControllerState(bits=bits, shift_ema=ema,
                          interval=torch.where(due, interval, state.interval),
                          countdown=torch.where(due, interval, state.countdown - 1), updates=state.updates + 1,
                          diff_bit=torch.where(measured, diff, state.diff_bit))
    return ControllerState(*(torch.where(valid, n, o) for n, o in zip(new, state)))
