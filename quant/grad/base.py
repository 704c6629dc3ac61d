"""What every gradient-interval policy provides (docs/methods.md §1.3): how a layer picks gamma = c / g_max.

Most policies only choose gamma, one ratio per tensor. The field's other baselines (docs/methods.md §1.10) need
three more hooks, each a no-op here: `clip` may return one clip per row (per-sample scaling), `prepare`/`restore`
may transform the tensor around the quantizer (an orthogonal block transform), and a policy whose state is an
absolute range rather than a ratio (`stores_range`) gets the tensor's g_max in `update_gamma`.

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
    # False when the scale differs across rows (`clip` per sample): the exact and int8 kernels need one per tensor.
    per_tensor: ClassVar[bool] = True
    # True when the `gamma` buffer holds an absolute range that `update_gamma` moves from the stored value and the
    # gradient's g_max (in-hindsight); False when it is the ratio used, moved by the clipped fraction.
    stores_range: ClassVar[bool] = False
    # True when the policy reads g's values, not their positions (no per-row clip, no transform, no sampling by
    # position): quant.gradient then runs it as one fused region on a flat view of g (quant.fused).
    fusable: ClassVar[bool] = True

    def initial_gamma(self) -> float:
        """gamma of a fresh layer."""
        return 1.0

    def choose_gamma(self, g: Tensor, g_max: Tensor, gamma: Tensor, bits: int) -> Tensor:
        """gamma used to quantize THIS gradient `g` (float32, any shape); default: the stored one."""
        return gamma

    def update_gamma(self, gamma: Tensor, clip_fraction: Tensor, bits: int, g_max: Tensor | None = None) -> Tensor:
        """gamma stored for the NEXT gradient, after `g` was quantized with `gamma`; default: unchanged.

        Element-wise in its tensors: quant.apply_deferred_updates calls it once on the vector of every layer's
        (rank-mean) gamma used, clipped fraction and g_max; with `stores_range`, `gamma` is the stored range.
        """
        return gamma

    def clip(self, g: Tensor, g_max: Tensor, gamma: Tensor) -> Tensor:
        """The clip value c, 0-dim or broadcastable against `g` (one per row); default gamma * g_max."""
        return gamma * g_max

    def prepare(self, g: Tensor) -> tuple[Tensor, object]:
        """(the tensor to quantize, what `restore` needs): default `g` itself."""
        return g, None

    def restore(self, g_hat: Tensor, aux: object) -> Tensor:
        """The quantized gradient in `g`'s coordinates from the quantized `prepare` output; default unchanged."""
        return g_hat

    def warmup_gamma(self, g: Tensor, g_max: Tensor, bits: int) -> Tensor:
        """gamma after the first-batch warm-up on gradient `g`; only called when `has_warmup`."""
        raise NotImplementedError(f"{type(self).__name__} has no warm-up")
