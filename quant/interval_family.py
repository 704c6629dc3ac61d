"""The fixed-point family (docs/methods.md §1): learned W/A intervals, a gradient-clipping policy per layer.

Deferred updates: each GradQuantizer's pending row is quant.gradient.PENDING_NAMES summed over passes and ranks;
gamma moves by the layer's policy on the means (layers sharing a policy and bit-width as one vector). Statistics:
"E_G/<layer>", "E_GL/<layer>", "clip_frac/<layer>", "gamma/<layer>", "g_max/<layer>" for every layer that recorded
since the last drain, and "grad/skipped_tensors" (zero or non-finite gradients passed through, in total).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from quant.family import QuantizerFamily
from quant.forward import ActQuantizer, WeightQuantizer
from quant.gradient import STAT_NAMES, GradQuantizer, named_grad_quantizers
from quant.spec import QuantSpec


class IntervalFamily(QuantizerFamily):
    def quantizers(self, spec: QuantSpec, device) -> tuple[nn.Module, nn.Module, nn.Module]:
        wq = WeightQuantizer(spec.w_bits, device=device, grid=spec.weight_grid) if spec.w_bits else nn.Identity()
        aq = ActQuantizer(spec.a_bits, device=device) if spec.a_bits else nn.Identity()
        gq = GradQuantizer(spec.g_bits, spec.grad, large_fraction=spec.large_fraction, fmt=spec.grad_float_format,
                           device=device) \
            if spec.g_bits else nn.Identity()
        return wq, aq, gq

    def members(self, model: nn.Module) -> list[tuple[str, GradQuantizer]]:
        """The gradient quantizers, grouped by (policy, bits) so that each group's rows are contiguous."""
        groups: dict[tuple, list[tuple[str, GradQuantizer]]] = {}
        for name, q in named_grad_quantizers(model):
            groups.setdefault((q.policy, q.bits), []).append((name, q))
        return [member for group in groups.values() for member in group]

    def apply_pending(self, members: list[tuple[str, GradQuantizer]], table: Tensor) -> None:
        """gamma <- policy.update_gamma(mean gamma used, mean clipped fraction) over the passes whose gradient was
        usable (MSE: the mean chosen gamma); a layer no rank could use keeps its gamma; `skipped` grows by the
        total."""
        quantizers = [q for _, q in members]
        skipped, valid, gamma_sum, clip_sum, g_max_sum = table.unbind(1)  # (L,) each
        count = valid.clamp_min(1.0)
        gamma_used, clip_fraction, g_max = gamma_sum / count, clip_sum / count, g_max_sum / count
        stored = torch.stack([q.gamma for q in quantizers])
        updated, start = [], 0
        while start < len(quantizers):  # one vector per (policy, bits) group, contiguous by members()
            policy, bits = quantizers[start].policy, quantizers[start].bits
            end = start
            while end < len(quantizers) and (quantizers[end].policy, quantizers[end].bits) == (policy, bits):
                end += 1
            part = slice(start, end)
            if policy.stores_range:  # in-hindsight: the stored range moves with the mean maximum
                updated.append(policy.update_gamma(stored[part], clip_fraction[part], bits, g_max[part]))
            elif policy.needs_clip_fraction:
                updated.append(policy.update_gamma(gamma_used[part], clip_fraction[part], bits))
            else:
                updated.append(gamma_used[part])
            start = end
        gammas = [q.gamma for q in quantizers]
        torch._foreach_copy_(gammas, list(torch.where(valid > 0, torch.cat(updated), stored).unbind()))
        torch._foreach_add_([q.skipped for q in quantizers], list(skipped.unbind()))

    def stats_tensor(self, model: nn.Module) -> Tensor | None:
        layers = named_grad_quantizers(model)
        if not layers:
            return None
        table = torch.stack([q.stats for _, q in layers])  # (L, 1 + S): fresh flag, statistics
        return torch.cat([table.flatten(), torch.stack([q.skipped for _, q in layers]).sum().reshape(1)])

    def stats_dict(self, model: nn.Module, values: list[float]) -> dict[str, float]:
        layers = named_grad_quantizers(model)
        width = 1 + len(STAT_NAMES)
        out = {}
        for i, (name, q) in enumerate(layers):
            q.stats[0] = 0.0  # consumed
            row = values[i * width:(i + 1) * width]
            if row[0]:
                out.update({f"{stat}/{name}": value for stat, value in zip(STAT_NAMES, row[1:])})
        out["grad/skipped_tensors"] = values[len(layers) * width]
        return out
