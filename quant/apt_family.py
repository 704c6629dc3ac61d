"""The APT family (docs/methods.md §4): power-of-two fixed point with an adaptive bit-width per layer and role.

Deferred updates (§4.3): each AptQuantizer's pending row is its measurement [valid, overflow, shifts (C),
diff_bits (C)] summed over passes and ranks; every controller steps as one vector on the rank means (the shift's
mean rounded up, overflow if any rank overflowed, diff_bit NaN on plain steps: no measurement). Statistics (§4.4):
"bits_{w,a,g}/<layer>", "diff_bit_{w,a,g}/<layer>" (the last check's), "interval_{w,a,g}/<layer>", the means over
layers "apt/bits_{w,a,g}" and "apt/diff_bit_{w,a,g}", and "apt/cost" (apt_cost).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from quant.apt import ControllerState, Measurement, controller_step
from quant.apt_layers import AptGradQuantizer, AptQuantizer, named_apt_quantizers, pending_width
from quant.family import QuantizerFamily
from quant.spec import QuantSpec
from quant.unwrap import unwrap

FULL_BITS = 32.0  # a role kept in full precision counts as 32-bit in the MAC cost


class AptFamily(QuantizerFamily):
    def quantizers(self, spec: QuantSpec, device) -> tuple[nn.Module, nn.Module, nn.Module]:
        policy = spec.precision
        return (AptQuantizer("w", spec.w_bits, policy, device, grid=spec.weight_grid) if spec.w_bits else nn.Identity(),
                AptQuantizer("a", spec.a_bits, policy, device) if spec.a_bits else nn.Identity(),
                AptGradQuantizer(spec.g_bits, policy, device) if spec.g_bits else nn.Identity())

    def members(self, model: nn.Module) -> list[tuple[str, AptQuantizer]]:
        return named_apt_quantizers(model)

    def apply_pending(self, members: list[tuple[str, AptQuantizer]], table: Tensor) -> None:
        """One controller step for every member, as one vector, on the rank means of its pending row. A quantizer
        that observed several tensors since the last call (a layer applied twice) steps once, on the mean."""
        apt = [q for _, q in members]
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

    def stats_tensor(self, model: nn.Module) -> Tensor | None:
        apt = named_apt_quantizers(model)
        if not apt:
            return None
        return torch.cat([torch.stack([torch.stack([q.bits, q.diff_bit, q.interval]) for _, q in apt]).flatten(),
                          apt_cost(model).reshape(1)])

    def stats_dict(self, model: nn.Module, values: list[float]) -> dict[str, float]:
        out, by_role = {}, {}
        for i, (name, q) in enumerate(named_apt_quantizers(model)):
            bits, diff, interval = values[3 * i:3 * i + 3]
            out.update({f"bits_{q.role}/{name}": bits, f"diff_bit_{q.role}/{name}": diff,
                        f"interval_{q.role}/{name}": interval})
            by_role.setdefault(q.role, []).append((bits, diff))
        for role, rows in by_role.items():
            out[f"apt/bits_{role}"] = sum(b for b, _ in rows) / len(rows)
            out[f"apt/diff_bit_{role}"] = sum(d for _, d in rows) / len(rows)
        out["apt/cost"] = values[-1]
        return out


def apt_cost(model: nn.Module) -> torch.Tensor:
    """Bit-weighted MACs of the APT layers relative to 32-bit, on device (docs/methods.md §4.4).

    Per layer, MACs per sample = output elements per sample x weight elements per output channel, in each of the
    three products of a training step: forward W x A, backward dL/dX = G x W and dL/dW = G x A. A product costs
    its two bit-widths multiplied; the figure is sum(MACs * (w a + g w + g a)) / sum(MACs * 3 * 32 * 32). Only
    layers with an APT gradient quantizer count (its forward notes the output size); 0 before any forward.
    """
    rows = []
    for layer in unwrap(model).modules():
        gq = getattr(layer, "gq", None)
        if not isinstance(gq, AptGradQuantizer):
            continue
        w, a = (q.bits if hasattr(q, "bits") else torch.tensor(FULL_BITS, device=gq.bits.device)
                for q in (layer.wq, layer.aq))
        macs = gq.out_numel * layer.weight[0].numel()
        rows.append(torch.stack([macs * (w * a + gq.bits * w + gq.bits * a), macs * 3 * FULL_BITS ** 2]))
    if not rows:
        return torch.zeros(())
    weighted, full = torch.stack(rows).sum(0)
    return weighted / full.clamp_min(1.0)
