"""QuantLifecycle: the one object a training loop talks to about its quantizers, from set-up to statistics.

A run's quantizers need a few things at fixed moments, and only these (docs/methods.md §1.6-1.7, §4):
- `prepare`: after `quantize_`, before the model moves: defer gamma updates when ranks must agree on them first,
  and tell APT the run's length;
- `warm_up`: on the first batch of a fresh run, initialise the intervals and LBT's gamma, then make every rank's
  state identical;
- `before_step(step, logging)`: APT's check cadence, and recording of the per-layer statistics on logging steps;
- `after_backward`: the cross-rank sum of pending gradient-interval statistics (several ranks only);
- `drain(logging)`: the per-layer E(G), E(G_L), gamma (and APT's bits) of a logging step, as floats.
The quantizers' own state (intervals, gamma, APT's controllers) lives in the model's state_dict, so a checkpoint of
the model is a checkpoint of the quantizers. A full-precision run gets the same object, doing nothing.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from quant.apt_layers import CheckSchedule, set_precision_schedule
from quant.kernel_rule import kernel_choices
from quant.layers import QConv2d, QLinear
from quant.stats import drain_grad_stats, set_recording
from quant.sync import AllReduce, apply_deferred_updates, set_deferred_updates, sync_quant_state
from quant.warmup import warmup_grad_intervals


class QuantLifecycle:
    """Drives the quantizers of `model` through one run; `all_reduce` (a cross-rank sum) when several ranks train."""

    def __init__(self, model: nn.Module, *, all_reduce: AllReduce | None = None) -> None:
        self.model = model
        self.all_reduce = all_reduce
        self.quantized = any(isinstance(m, (QConv2d, QLinear)) for m in model.modules())
        self.recording = False  # this step records the per-layer statistics (a logging step)
        self._precision_step: Callable[[int], None] = lambda step: None

    def labels(self) -> dict:
        """What the run summary says about the quantized layers: how many, and which kernel each one runs."""
        if not self.quantized:
            return {}
        return {"quantized_layers": sum(isinstance(m, (QConv2d, QLinear)) for m in self.model.modules()),
                "kernels": kernel_choices(self.model)}  # {layer: "int8" | "int8-fwd-dx" | "int8-forward" | ...}

    def prepare(self, *, steps_per_epoch: int, epochs: int) -> None:
        if not self.quantized:
            return
        set_deferred_updates(self.model, self.all_reduce is not None)  # gamma waits for the cross-rank reduction
        set_precision_schedule(self.model, steps_per_epoch=steps_per_epoch, epochs=epochs)  # APT only
        self._precision_step = CheckSchedule(self.model)  # APT's check steps; a no-op without APT

    def warm_up(self, loss: Callable[[], torch.Tensor]) -> None:
        """First-batch interval initialisation and gamma warm-up (no optimizer step), then identical state on every
        rank. `loss` runs the bare model (no DDP hooks)."""
        if not self.quantized:
            return
        warmup_grad_intervals(self.model, loss)
        sync_quant_state(self.model, self.all_reduce)

    def before_step(self, step: int, logging: bool) -> None:
        """`step`: 0-based count of steps taken; `logging`: this step's statistics are drained after it."""
        self._precision_step(step)
        if logging and self.quantized:
            set_recording(self.model, True)
            self.recording = True

    def after_backward(self) -> None:
        if self.all_reduce is not None and self.quantized:
            apply_deferred_updates(self.model, self.all_reduce)

    def drain(self) -> dict[str, float]:
        """The logging step's per-layer statistics (one host sync), and recording off again."""
        if not self.quantized:
            return {}
        set_recording(self.model, False)
        self.recording = False
        return drain_grad_stats(self.model)
