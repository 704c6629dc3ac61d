"""Quantization statistics: recorded on device on logging steps, drained with one host sync.

docs/methods.md §1.5 (gradient errors) and §4 (APT: bits per layer and role, diff_bit, the bit-weighted MAC cost).

Layers never log; the trainer turns recording on for a logging step and drains one flat dict afterwards.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from quant.apt_layers import AptGradQuantizer, named_apt_quantizers
from quant.gradient import STAT_NAMES, named_grad_quantizers
from quant.unwrap import unwrap

FULL_BITS = 32.0  # a role kept in full precision counts as 32-bit in the MAC cost


def set_recording(model: nn.Module, enabled: bool) -> None:
    """Record gradient statistics (True) or not (False: no extra work at all), from the next forward on.

    The flag travels with the forward into its backward, so set it before the logging step's forward.
    """
    for _, quantizer in named_grad_quantizers(model):
        quantizer.recording = enabled


def drain_grad_stats(model: nn.Module) -> dict[str, float]:
    """Statistics of every layer that recorded since the last drain, plus the skipped-tensor total; ONE host sync.

    Keys: "E_G/<layer>", "E_GL/<layer>", "clip_frac/<layer>", "gamma/<layer>", "g_max/<layer>" and
    "grad/skipped_tensors" (zero or non-finite gradient tensors passed through unquantized, in total).
    Under APT (docs/methods.md §4) instead: "bits_{w,a,g}/<layer>", "diff_bit_{w,a,g}/<layer>" (the last measured),
    "interval_{w,a,g}/<layer>", the means over layers "apt/bits_{w,a,g}" and "apt/diff_bit_{w,a,g}", and
    "apt/cost" (see apt_cost_table).
    """
    layers = named_grad_quantizers(model)
    apt = named_apt_quantizers(model)
    if not layers and not apt:
        return {}
    parts, width = [], 0
    if layers:
        table = torch.stack([q.stats for _, q in layers])  # (L, 1 + S): fresh flag, statistics
        skipped = torch.stack([q.skipped for _, q in layers]).sum()
        parts, width = [table.flatten(), skipped.reshape(1)], table.shape[1]
    if apt:
        parts += [torch.stack([torch.stack([q.bits, q.diff_bit, q.interval]) for _, q in apt]).flatten(),
                  apt_cost(model).reshape(1)]
    values = torch.cat(parts).tolist()  # the one sync
    out = {}
    if layers:
        for _, q in layers:
            q.stats[0] = 0.0  # consumed
        for i, (name, _) in enumerate(layers):
            row = values[i * width:(i + 1) * width]
            if row[0]:
                out.update({f"{stat}/{name}": value for stat, value in zip(STAT_NAMES, row[1:])})
        out["grad/skipped_tensors"] = values[len(layers) * width]
        values = values[len(layers) * width + 1:]
    if apt:
        by_role: dict[str, list[tuple[float, float]]] = {}
        for i, (name, q) in enumerate(apt):
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
    """Bit-weighted MACs of the APT layers relative to 32-bit, on device (docs/methods.md §4).

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
