"""Quantizer state that stays identical on every rank under torch.distributed (docs/methods.md §1.7).

Each rank quantizes its own dL/dY, with its own g_max and rounding noise. What must agree across ranks is the
state that shapes the NEXT quantization: gamma, and the intervals s_W, u_A set from the first batch.

- `apply_deferred_updates(model, all_reduce)` after every backward: ONE packed all-reduce of what the
  layers left in `pending` (set_deferred_updates), then each quantizer family's update from the rank sums
  (quant.family: gamma by each policy, APT's controllers, docs/methods.md §4.3); no host sync, so it can sit in
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

from quant.apt_layers import named_apt_quantizers
from quant.families import FAMILIES
from quant.forward import ActQuantizer, WeightQuantizer
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
    """After `loss.backward()` and before the next forward: reduce the pending statistics, update the state, clear.

    Every quantizer family (quant.family) packs its members' pending rows; ONE all-reduce sums all of them over
    the ranks, and each family updates its members from its block: gamma from the mean gamma used and clipped
    fraction (quant.interval_family), APT's controllers from the mean measurements (quant.apt_family). Every rank
    must call it at the same steps.
    """
    blocks = [(family, members) for family in FAMILIES if (members := family.members(model))]
    if not blocks:
        return
    if not all(q.deferred for _, members in blocks for _, q in members):
        raise RuntimeError("apply_deferred_updates found quantizers that update their state in place: call "
                           "quant.set_deferred_updates(model, True) before the forward")
    pendings = [q.pending for _, members in blocks for _, q in members]
    packed = torch.cat(pendings)  # every family's rows, in FAMILIES order
    torch._foreach_zero_(pendings)
    if all_reduce is not None:
        all_reduce(packed)  # the step's one collective
    start = 0
    for family, members in blocks:
        size = sum(q.pending.numel() for _, q in members)
        family.apply_pending(members, packed[start:start + size].view(len(members), -1))
        start += size


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
