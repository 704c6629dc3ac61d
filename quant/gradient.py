"""Output-gradient quantization: identity in forward, quantized error signal in backward.

docs/methods.md §1.1-1.2 (what and how), §1.5 (statistics), §1.7 (deferred updates under DDP).

A quantized layer computes `y = op(Qa(x), Qw(w))` and returns `GradQuantizer(y)`. In backward, the incoming
`g = dL/dy` is replaced by `g_hat` before autograd runs the op's own backward, so BOTH dL/dW and dL/dX are
computed from the quantized error signal, as in the paper (and the official code's `conv2d_biprec`).

    g_max = max|g|,  c = gamma * g_max,  D = 2c / (2^b - 2)
    g_hat = clamp(floor((g + c) / D + u), 0, 2^b - 2) * D - c,  u ~ U[0, 1)   (stochastic, saturating)

(u: torch.rand, except a vectorised integer hash under torch.compile on the CPU; see quant.primitives.uniform_like.)

gamma comes from the policy (quant.grad.*) and the layer's `gamma` buffer. A gradient whose g_max is 0 or not
finite passes through unchanged and increments the on-device `skipped` counter (no NaN, no host sync).
All per-step work is on device inside the backward, including the policy's buffer update, so the function traces
into a compiled backward graph (torch.compile supports buffer mutation there; checked by the tests).

Deferred mode (`deferred`, set by quant.set_deferred_updates; docs/methods.md §1.7): the backward leaves `gamma`
and `skipped` alone and adds one row (PENDING_NAMES) to the layer's `pending` tensor instead;
quant.apply_deferred_updates reduces every layer's row over the ranks and applies the policy's update. Each rank
still quantizes its own dL/dY with its own g_max; only the statistics that move gamma are shared.

Statistics (only when `recording`; docs/methods.md §1.5): E(G) = mean|g_hat - g| / g_max over all elements,
E(G_L) = the same over the top `large_fraction` of |g|, the clipped fraction r, the gamma used, and g_max.
They land in the small `stats` buffer that quant.drain_grad_stats reads on logging steps.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from quant.float_format import FloatFormat
from quant.fused import fused
from quant.grad.base import GradPolicy
from quant.primitives import grid_index, symmetric_levels
from quant.state import OptionalStateMixin
from quant.unwrap import unwrap

# Layout of GradQuantizer.stats: a "fresh" flag (recorded since the last drain), then the statistics.
STAT_NAMES = ("E_G", "E_GL", "clip_frac", "gamma", "g_max")
# Layout of GradQuantizer.pending, sums over the backward passes since the last apply_deferred_updates: tensors
# skipped, tensors that may move gamma, and their gamma used, clipped fraction and g_max (zero where they may not).
PENDING_NAMES = ("skipped", "valid", "gamma_used", "clip_frac", "g_max")


def _large_gradient_error(abs_error: Tensor, g: Tensor, fraction: float) -> Tensor:
    """mean |g_hat - g| over the top `fraction` of |g| (G_L, docs/methods.md §1.3); topk only runs on logging steps."""
    k = max(1, math.ceil(fraction * g.numel()))
    index = g.reshape(-1).abs().topk(k, sorted=False).indices  # (k,)
    return abs_error.reshape(-1)[index].mean()


class _QuantizeGradient(torch.autograd.Function):
    """Identity forward; backward quantizes the incoming gradient and updates the layer's gradient state."""

    @staticmethod
    def forward(ctx, y: Tensor, gamma: Tensor, skipped: Tensor, stats: Tensor, warmed: Tensor, pending: Tensor,
                bits: int, policy: GradPolicy, recording: bool, warming_up: bool, deferred: bool,
                large_fraction: float, fmt: FloatFormat | None) -> Tensor:
        stash_grad_state(ctx, gamma, skipped, stats, warmed, pending, bits, policy, recording, warming_up, deferred,
                         large_fraction, fmt)
        # A copy, not `y` or a view of it: an in-place op after the layer (ReLU(inplace=True) in VGG, AlexNet)
        # on a custom Function's view output is an autograd error. torch.compile fuses the copy away.
        return y.clone()

    @staticmethod
    def backward(ctx, g_out: Tensor):
        g_hat, _, _ = quantize_output_gradient(ctx, g_out)
        return g_hat.to(g_out.dtype), *([None] * 12)


def stash_grad_state(ctx, gamma: Tensor, skipped: Tensor, stats: Tensor, warmed: Tensor, pending: Tensor, bits: int,
                     policy: GradPolicy, recording: bool, warming_up: bool, deferred: bool,
                     large_fraction: float, fmt: FloatFormat | None = None) -> None:
    """Put a GradQuantizer's state (GradQuantizer.function_args) on an autograd ctx for quantize_output_gradient.

    State tensors ride on ctx (not save_for_backward): they are mutated in backward, and a layer applied twice
    in one forward must not fail autograd's saved-tensor version check.
    """
    ctx.gamma, ctx.skipped, ctx.stats, ctx.warmed, ctx.pending = gamma, skipped, stats, warmed, pending
    ctx.bits, ctx.policy, ctx.recording, ctx.warming_up = bits, policy, recording, warming_up
    ctx.deferred, ctx.large_fraction, ctx.fmt = deferred, large_fraction, fmt


def quantize_output_gradient(ctx, g_out: Tensor, *, codes: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(g_hat, centred codes, step D): quantize dL/dY with the state stashed on ctx, and update that state.

    g_hat (float32) is what the fake-quant path hands to autograd. With `codes`, also the integer codes
    `q = k - (2^(b-1) - 1)` in `[-(2^(b-1) - 1), 2^(b-1) - 1]` (float32) and D, so that g_hat = q * D up to
    rounding: the exact and int8 kernels (quant.integer) compute with them. A tensor that is passed through
    (g_max zero or not finite) gets codes 0 and D = g_max: zero gradients for a zero tensor, NaN otherwise, so
    a non-finite gradient still reaches the trainer's non-finite check.
    """
    args = (ctx.gamma, ctx.skipped, ctx.stats, ctx.warmed, ctx.pending, ctx.bits, ctx.policy, ctx.recording,
            ctx.warming_up, ctx.deferred, ctx.large_fraction, ctx.fmt, codes)
    if ctx.policy.fusable and not (ctx.recording or ctx.warming_up):  # statistics, warm-up: the reference
        return _quantize_and_update(g_out, *args)
    return _quantize_and_update.reference(g_out, *args)


@fused(shaped_args=1, shaped_results=2)
def _quantize_and_update(g_out: Tensor, gamma: Tensor, skipped: Tensor, stats: Tensor, warmed: Tensor,
                         pending: Tensor, bits: int, policy: GradPolicy, recording: bool, warming_up: bool,
                         deferred: bool, large_fraction: float, fmt: FloatFormat | None,
                         codes: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """quantize_output_gradient on explicit state (GradQuantizer.function_args): one fused region in eager mode."""
    g = g_out.float()  # float32 grid arithmetic under bf16 autocast; no-op otherwise
    low, high = torch.aminmax(g)  # one pass, no |g| temporary; NaN propagates into g_max
    g_max = torch.maximum(-low, high)
    valid = torch.isfinite(g_max) & (g_max > 0)

    gamma_used = policy.choose_gamma(g, g_max, gamma, bits)
    g_in, aux = policy.prepare(g)  # the tensor the grid sees (BHQ: block-transformed), shaped as the policy needs
    clip = policy.clip(g_in, g_max, gamma_used)  # 0-dim, or one per row
    code = step_used = None
    if fmt is None:  # the integer grid: 2^b - 1 values in [-c, c], stochastic rounding
        levels = symmetric_levels(bits)
        step = 2 * clip / levels
        k = grid_index(g_in, -clip, step, levels, stochastic=True)  # quantize_symmetric, keeping the index
        g_hat = k * step + -clip
        if codes:
            code = torch.where(valid, k - levels // 2, 0.0)
            step_used = torch.where(valid, step, g_max)
    else:  # a float format replaces the grid: clip scaled onto its largest value (docs/methods.md §1.10)
        scale = clip / fmt.max_value
        g_hat = fmt.quantize(g_in / scale) * scale
    g_hat = torch.where(valid, policy.restore(g_hat, aux), g)

    clip_fraction = None
    if policy.needs_clip_fraction or recording:
        clip_fraction = (g_in.abs() > clip).sum() / g_in.numel()
    if recording:  # before the state update below: gamma_used may be the gamma buffer itself
        abs_error = (g_hat - g).abs()
        scale = torch.where(valid, 1 / g_max, 0.0)  # a skipped tensor reports zero error, not 0/0
        stats.copy_(torch.stack([
            torch.ones_like(g_max), abs_error.mean() * scale,
            _large_gradient_error(abs_error, g, large_fraction) * scale,
            clip_fraction, gamma_used, g_max]))

    if deferred:  # quant.apply_deferred_updates reduces this row over the ranks, then moves gamma
        zero = torch.zeros_like(g_max)
        pending.add_(torch.stack([
            (~valid).to(zero.dtype), valid.to(zero.dtype), torch.where(valid, gamma_used, zero),
            zero if clip_fraction is None else torch.where(valid, clip_fraction, zero), torch.where(valid, g_max, zero)]))
    else:
        if policy.stores_range:  # the buffer is a range, moved by this gradient's maximum (in-hindsight)
            gamma_next = policy.update_gamma(gamma, clip_fraction, bits, g_max)
        elif policy.needs_clip_fraction:
            gamma_next = policy.update_gamma(gamma_used, clip_fraction, bits)
        else:
            gamma_next = gamma_used
        if warming_up:  # never deferred (quant.warmup_grad_intervals turns deferral off for its passes)
            gamma_next = policy.warmup_gamma(g, g_max, bits)
            warmed.logical_or_(valid)
        gamma.copy_(torch.where(valid, gamma_next, gamma))
        skipped.add_((~valid).to(skipped.dtype))
    return g_hat, code, step_used


class GradQuantizer(OptionalStateMixin, nn.Module):
    """Per-layer gradient quantizer and its state: `gamma`, `skipped` (saved), `warmed` (saved), `stats`, `pending`.

    `recording`, `warming_up` and `deferred` are python flags (set by quant.set_recording,
    quant.warmup_grad_intervals, quant.set_deferred_updates); torch.compile specialises on them, so a step without
    recording traces no statistics at all.

    `pending` is a plain tensor attribute, not a buffer: DDP's broadcast_buffers re-sends rank 0's buffers before
    each synchronised forward, which would overwrite what the other ranks accumulated under `no_sync` (gradient
    accumulation). `_apply` moves it with the module (`.to(device)`).
    """

    def __init__(self, bits: int, policy: GradPolicy, *, large_fraction: float = 1e-3, fmt: FloatFormat | None = None,
                 device=None) -> None:
        super().__init__()
        self.bits, self.policy, self.large_fraction, self.fmt = bits, policy, large_fraction, fmt
        self.recording = False
        self.warming_up = False
        self.register_buffer("gamma", torch.tensor(policy.initial_gamma(), device=device))
        self.register_buffer("skipped", torch.zeros((), device=device))
        self.register_buffer("warmed", torch.zeros((), dtype=torch.bool, device=device))
        self.register_buffer("stats", torch.zeros(1 + len(STAT_NAMES), device=device), persistent=False)
        self.deferred = False
        self.pending = torch.zeros(len(PENDING_NAMES), device=device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.pending = fn(self.pending)
        return self

    def function_args(self) -> tuple:
        """The state an autograd Function hands to stash_grad_state (this module's or quant.integer's)."""
        return (self.gamma, self.skipped, self.stats, self.warmed, self.pending, self.bits, self.policy,
                self.recording, self.warming_up, self.deferred, self.large_fraction, self.fmt)

    def forward(self, y: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and y.requires_grad):
            return y
        return _QuantizeGradient.apply(y, *self.function_args())

    def extra_repr(self) -> str:
        return f"bits={self.bits}, policy={self.policy}" + (f", format={self.fmt.name}" if self.fmt else "")


def named_grad_quantizers(model: nn.Module) -> list[tuple[str, GradQuantizer]]:
    """(layer name, its GradQuantizer); the layer name is the module name in named_modules ("layer1.0.conv1")."""
    model = unwrap(model)
    return [(name.rpartition(".")[0], m) for name, m in model.named_modules() if isinstance(m, GradQuantizer)]
