"""Quantizer state that stays identical on every rank under torch.distributed (docs/methods.md §1.7).

Each rank quantizes its own dL/dY, with its own g_max and rounding noise. What must agree across ranks is the
state that shapes the NEXT quantization: gamma, and the intervals s_W, u_A set from the first batch.

- `apply_deferred_updates(model, all_reduce)` after every backward: ONE packed all-reduce of what the
  layers left in `pending` (set_deferred_updates), then each policy's gamma update from the rank means, and the
  APT controllers' step on the rank means of their measurements (docs/methods.md §4.3); no host sync, so it can sit in
  a step that never waits for the GPU.
- `sync_quant_state(model, all_reduce)` once, after the first-batch warm-up: rank means of s_W, u_A and gamma.

`all_reduce(t)` sums `t` over the ranks in place (e.g. `lambda t: torch.distributed.all_reduce(t)`, SUM is its
default); None means a single process. The caller owns the process group, so quant never imports
torch.distributed, and a test can pass a fake.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor

from quant.apt import ControllerState, Measurement, controller_step
from quant.apt_layers import AptQuantizer, named_apt_quantizers, pending_width
from quant.forward import ActQuantizer, WeightQuantizer
from quant.grad.base import GradPolicy
from quant.gradient import GradQuantizer, named_grad_quantizers
from quant.unwrap import unwrap

AllReduce = Callable[[Tensor], None]


def set_deferred_updates(model: nn.Module, enabled: bool) -> None:
    """Defer every gradient quantizer's gamma update and skip count to apply_deferred_updates (True), or not.

    Takes effect from the next forward (the flag travels with the forward into its backward, like recording).
    warmup_grad_intervals never defers (its result is each rank's own until sync_quant_state). Single-process
    training gives the same gamma either way (the update only moves to after the backward), except for a layer
    applied several times per step: deferred, it takes one update from the mean statistics.
    """
    for _, quantizer in named_grad_quantizers(model) + named_apt_quantizers(model):
        quantizer.deferred = enabled


def apply_deferred_updates(model: nn.Module, all_reduce: AllReduce | None = None) -> None:
    """After `loss.backward()` and before the next forward: reduce the pending statistics, move gamma, clear them.

    Per layer, over every rank and every backward pass since the last call: gamma_used and the clipped fraction
    are averaged over the passes whose gradient was usable, and gamma <- policy.update_gamma(mean gamma_used,
    mean clip fraction) (MSE: the mean chosen gamma); a layer no rank could use keeps its gamma. `skipped` grows
    by the total over the ranks, so it too is the same everywhere. Every rank must call it at the same steps.
    """
    quantizers = [q for _, q in named_grad_quantizers(model)]
    apt = [q for _, q in named_apt_quantizers(model)]
    if not quantizers and not apt:
        return
    if not all(q.deferred for q in quantizers + apt):
        raise RuntimeError("apply_deferred_updates found quantizers that update their state in place: call "
                           "quant.set_deferred_updates(model, True) before the forward")
    groups: dict[tuple[GradPolicy, int], list[GradQuantizer]] = {}  # layers sharing a policy update as one vector
    for q in quantizers:
        groups.setdefault((q.policy, q.bits), []).append(q)
    ordered = [q for members in groups.values() for q in members]
    pendings = [q.pending for q in ordered + apt]
    packed = torch.cat(pendings)  # (4 L + P Q,): gradient.PENDING_NAMES rows, then apt_layers' measurement rows
    torch._foreach_zero_(pendings)
    if all_reduce is not None:
        all_reduce(packed)  # the step's one collective
    split = 4 * len(ordered)
    if apt:
        _step_apt_controllers(apt, packed[split:].view(len(apt), -1))
    if not ordered:
        return
    table = packed[:split].view(len(ordered), 4)  # (L, 4), summed over the ranks
    skipped, valid, gamma_sum, clip_sum = table.unbind(1)  # (L,) each
    count = valid.clamp_min(1.0)
    gamma_used, clip_fraction = gamma_sum / count, clip_sum / count
    updated, start = [], 0
    for (policy, bits), members in groups.items():
        part = slice(start, start + len(members))
        start += len(members)
        updated.append(policy.update_gamma(gamma_used[part], clip_fraction[part], bits)
                       if policy.needs_clip_fraction else gamma_used[part])
    gammas = [q.gamma for q in ordered]
    torch._foreach_copy_(gammas, list(torch.where(valid > 0, torch.cat(updated), torch.stack(gammas)).unbind()))
    torch._foreach_add_([q.skipped for q in ordered], list(skipped.unbind()))


def _step_apt_controllers(apt: list[AptQuantizer], table: Tensor) -> None:
    """One controller step for every APT quantizer, as one vector, on the rank means of its pending row (Q, P):
    [valid, overflow, shifts (C), diff_bits (C)] summed over the ranks. The shifts' mean is rounded up (ranks whose
    max|x| differ get the larger scale when two ranks disagree by one), overflow counts if any rank overflowed, and
    a diff_bit is NaN (no measurement) unless the step was a check step.

    A quantizer that observed several tensors since the last call (a layer applied twice) steps once, on the mean.
    """
    policy, first = apt[0].policy, apt[0]
    if any(q.policy != policy or q.schedule != first.schedule for q in apt):
        raise RuntimeError("APT quantizers of one model must share one policy and schedule: build them from one "
                           "QuantSpec and call quant.set_precision_schedule on the whole model")
    width = len(policy.candidates)
    assert table.shape[1] == pending_width(policy)
    valid, overflow = table[:, 0], table[:, 1]  # (Q,) each
    count = valid.clamp_min(1.0).unsqueeze(1)
    seen = Measurement(valid=valid > 0, shifts=torch.ceil(table[:, 2:2 + width] / count),
                       diffs=table[:, 2 + width:] / count, overflow=overflow > 0)
    state = ControllerState(*(torch.stack([getattr(q, name) for q in apt]) for name in ControllerState._fields))
    new = controller_step(state, seen, policy, first.schedule)
    for name, values in zip(ControllerState._fields, new):
        torch._foreach_copy_([getattr(q, name) for q in apt], list(values.unbind()))


def _state_row(m: nn.Module) -> Tensor:
    """[1, weight, weight * value, flag, value, skipped]: what sync_quant_state reduces for one quantizer."""
    if isinstance(m, WeightQuantizer):
        weight, value, flag = m.initialized, m.scale, m.initialized
    elif isinstance(m, ActQuantizer):
        weight, value, flag = m.initialized, m.upper, m.signed
    else:  # GradQuantizer: a warm-up policy's gamma only counts where this rank's warm-up saw a usable gradient
        weight = m.warmed if m.policy.has_warmup else torch.ones_like(m.warmed)
        value, flag = m.gamma, m.warmed
    weight, value = weight.float(), value.detach().float()
    skipped = m.skipped.float() if isinstance(m, GradQuantizer) else torch.zeros_like(value)
    return torch.stack([torch.ones_like(value), weight, weight * value, flag.float(), value, skipped])


@torch.no_grad()
def sync_quant_state(model: nn.Module, all_reduce: AllReduce | None = None) -> None:
    """Once, after warmup_grad_intervals and before the first optimizer step: every rank takes the rank mean.

    Each rank initialised s_W, u_A (and `signed`) and ran the gamma warm-up on its own first batch. Averaged:
    s_W and u_A over the ranks that initialised them, gamma over the ranks whose warm-up saw a usable gradient
    (every rank for policies without a warm-up); `signed` and `warmed` become true if they are on any rank.
    With no rank contributing, the plain mean. `skipped` becomes the total over the ranks, as
    apply_deferred_updates keeps it from then on; so call this once per warm-up, not again (e.g. on resume,
    where every rank loads the same checkpoint and there is nothing to reconcile).
    One small all-reduce; host syncs are fine here. Run it on every rank; None (one process) does nothing.
    """
    if all_reduce is None:
        return
    quantizers = [m for m in unwrap(model).modules()
                  if isinstance(m, (WeightQuantizer, ActQuantizer, GradQuantizer))]
    if not quantizers:
        return
    table = torch.stack([_state_row(m) for m in quantizers])  # (Q, 6)
    all_reduce(table)
    ranks, weight, weighted, flag, value, skipped = table.unbind(1)  # (Q,) each
    mean = torch.where(weight > 0, weighted / weight.clamp_min(1.0), value / ranks)
    for m, v, has_weight, any_flag, total in zip(quantizers, mean, (weight > 0).tolist(), flag > 0, skipped):
        if isinstance(m, GradQuantizer):
            m.gamma.copy_(v)
            m.warmed.copy_(any_flag)
            m.skipped.copy_(total)
            continue
        (m.scale if isinstance(m, WeightQuantizer) else m.upper).copy_(v)
        if isinstance(m, ActQuantizer):
            m.signed.copy_(any_flag)
        m.initialized.fill_(has_weight)
        m.needs_init = not has_weight
