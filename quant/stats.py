"""Quantization statistics: recorded on device on logging steps, drained with one host sync.

docs/methods.md §1.5 (gradient errors) and §4 (APT: bits per layer and role, diff_bit, the bit-weighted MAC cost).

Layers never log; the trainer turns recording on for a logging step and drains one flat dict afterwards, which each
quantizer family (quant.family) fills with its own numbers.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from quant.families import FAMILIES
from quant.gradient import named_grad_quantizers


def set_recording(model: nn.Module, enabled: bool) -> None:
    """Record gradient statistics (True) or not (False: no extra work at all), from the next forward on.

    The flag travels with the forward into its backward, so set it before the logging step's forward.
    """
    for _, quantizer in named_grad_quantizers(model):
        quantizer.recording = enabled


def drain_grad_stats(model: nn.Module) -> dict[str, float]:
    """Statistics of every layer that recorded since the last drain, from every quantizer family; ONE host sync.

    The keys are each family's (quant.interval_family: "E_G/<layer>", "E_GL/<layer>", "clip_frac/<layer>",
    "gamma/<layer>", "g_max/<layer>", "grad/skipped_tensors"; quant.apt_family: "bits_{w,a,g}/<layer>",
    "diff_bit_{w,a,g}/<layer>", "interval_{w,a,g}/<layer>", "apt/bits_{w,a,g}", "apt/diff_bit_{w,a,g}", "apt/cost").
    """
    parts = [(family, t) for family in FAMILIES if (t := family.stats_tensor(model)) is not None]
    if not parts:
        return {}
    values = torch.cat([t for _, t in parts]).tolist()  # the one sync
    out, start = {}, 0
    for family, t in parts:
        out.update(family.stats_dict(model, values[start:start + t.numel()]))
        start += t.numel()
    return out
