"""A quantizer family: one kind of W/A/G quantizer, and what the model-wide passes do with it.

A quantized layer (quant.layers) holds three quantizers, `wq`, `aq`, `gq`, and does not know their kind. Which kind
a QuantSpec asks for is its family (quant.families.family_of):
- `IntervalFamily` (quant.interval_family): fixed point with a learned W/A interval and a gradient-clipping policy
  (min-max, fixed, MSE, LBT; docs/methods.md §1);
- `AptFamily` (quant.apt_family): APT's power-of-two formats with adaptive bit-widths (docs/methods.md §4).

Besides building a layer's quantizers, a family answers the two model-wide passes of a training step, so that
quant.sync and quant.stats loop over families instead of knowing each kind:
- deferred updates under DDP (docs/methods.md §1.7, §4.3): each member quantizer leaves a row of sums in its
  `pending` tensor; quant.apply_deferred_updates all-reduces every family's rows in one packed collective and hands
  each family its block back;
- logging statistics (docs/methods.md §1.5, §4.4): each family puts its numbers in one device tensor, and
  quant.drain_grad_stats reads all of them with one host sync and lets each family name its own.
Adding a kind of quantizer: subclass QuantizerFamily, register it in quant.families.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn as nn
from torch import Tensor

from quant.spec import QuantSpec


class QuantizerFamily(ABC):
    """One kind of quantizer: a layer's three quantizers, and the deferred-update and statistics passes."""

    @abstractmethod
    def quantizers(self, spec: QuantSpec, device) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(wq, aq, gq) for one layer; nn.Identity where the spec keeps that role in full precision."""

    @abstractmethod
    def members(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """(layer name, quantizer) of every quantizer of this family in `model` that keeps a `pending` row, in the
        order its rows are packed (the same on every rank)."""

    @abstractmethod
    def apply_pending(self, members: list[tuple[str, nn.Module]], table: Tensor) -> None:
        """Update the members' state from `table` (len(members), row width): their pending rows, summed over the
        ranks and over the backward passes since the last call."""

    @abstractmethod
    def stats_tensor(self, model: nn.Module) -> Tensor | None:
        """This family's logging-step numbers as one flat device tensor (None: none in this model)."""

    @abstractmethod
    def stats_dict(self, model: nn.Module, values: list[float]) -> dict[str, float]:
        """Name the numbers of stats_tensor (read back as floats), and reset whatever a drain consumes."""
