"""First-batch warm-up of the gradient intervals (LBT official code; docs/methods.md §1.6), run before training."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from quant.forward import ActQuantizer, WeightQuantizer
from quant.gradient import GradQuantizer


def warmup_grad_intervals(model: nn.Module, loss_closure: Callable[[], torch.Tensor], max_iters: int = 100) -> None:
    """Run `loss_closure().backward()` on the first batch until every warm-up policy has set its gamma.

    No optimizer step; parameter gradients are zeroed afterwards. LBT layers run the official search on the
    gradient they receive (quant.grad.lbt.LBTPolicy.warmup_gamma), which completes in one pass; further passes
    (at most `max_iters`) only happen for layers that saw no usable gradient yet, and stop as soon as a pass
    makes no progress. Layers already warmed (e.g. restored from a checkpoint) are left alone.

    The pass also initialises the forward intervals (s_W, u_A) from this batch, as the official code does, and
    runs eagerly even on a torch.compile'd model, so the compiled step never traces that one-off work.
    Its passes never defer gamma updates (quant.set_deferred_updates): the warm-up is each rank's own, and
    quant.sync_quant_state reconciles the ranks afterwards (docs/methods.md §1.6-1.7).
    """
    if max_iters < 1:
        raise ValueError(f"max_iters={max_iters} is invalid: use an integer >= 1")
    modules = list(model.modules())
    pending = [m for m in modules if isinstance(m, GradQuantizer) and m.policy.has_warmup and not bool(m.warmed)]
    needs_init = any(isinstance(m, (WeightQuantizer, ActQuantizer)) and m.needs_init for m in modules)
    if not pending and not needs_init:
        return
    params = list(model.parameters())
    grad_quantizers = [m for m in modules if isinstance(m, GradQuantizer)]
    deferred = [m.deferred for m in grad_quantizers]
    try:
        for m in grad_quantizers:
            m.deferred = False
        for m in pending:
            m.warming_up = True
        with torch.compiler.set_stance("force_eager"):
            for _ in range(max_iters):
                loss_closure().backward()
                waiting = [m for m in pending if not bool(m.warmed)]  # warm-up only: host syncs are fine
                if not waiting or len(waiting) == len(pending):
                    break
                pending = waiting
    finally:
        for m, was_deferred in zip(grad_quantizers, deferred):
            m.warming_up, m.deferred = False, was_deferred
        for p in params:
            p.grad = None
