"""What every gradient-interval policy provides (docs/methods.md §1.3): how a layer picks gamma = c / g_max.

A policy is a small frozen value object holding hyper-parameters only. The per-layer state it reads and writes
(gamma, counters) lives in the layer's buffers (quant.gradient.GradQuantizer), so it is saved in checkpoints.
Policy methods run inside the backward pass, on device, on 0-dim tensors: no host syncs, no python branches on
data, so they trace into a compiled backward graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor


@dataclass(frozen=True, kw_only=True)
class GradPolicy:
    """Base policy: keep gamma where it is. Subclasses override the hooks they need."""

    # True when `update_gamma` needs the clipped fraction r = mean(|g| > c) every step (one fused reduction).
    needs_clip_fraction: ClassVar[bool] = False
    # True when the policy has a first-batch warm-up (`warmup_gamma`, run by quant.warmup_grad_intervals).
    has_warmup: ClassVar[bool] = False

    def initial_gamma(self) -> float:
        """gamma of a fresh layer."""
        return 1.0

    def choose_gamma(self, g: Tensor, g_max: Tensor, gamma: Tensor, bits: int) -> Tensor:
        """gamma used to quantize THIS gradient `g` (float32, any shape); default: the stored one."""
        return gamma

    def update_gamma(self, gamma: Tensor, clip_fraction: Tensor, bits: int) -> Tensor:
        """gamma stored for the NEXT gradient, after `g` was quantized with `gamma`; default: unchanged.

        Element-wise in its tensors: quant.apply_deferred_updates calls it once on the vector of every layer's
        (rank-mean) gamma and clipped fraction.
        """
        return gamma

    def warmup_gamma(self, g: Tensor, g_max: Tensor, bits: int) -> Tensor:
        """gamma after the first-batch warm-up on gradient `g`; only called when `has_warmup`."""
        raise NotImplementedError(f"{type(self).__name__} has no warm-up")
