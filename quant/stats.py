"""Gradient-quantization statistics: recorded on device on logging steps, drained with one host sync.

docs/methods.md §1.5.

Layers never log; the trainer turns recording on for a logging step and drains one flat dict afterwards.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from quant.gradient import STAT_NAMES, named_grad_quantizers


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
    """
    layers = named_grad_quantizers(model)
    if not layers:
        return {}
    table = torch.stack([q.stats for _, q in layers])  # (L, 1 + S): fresh flag, statistics
    skipped = torch.stack([q.skipped for _, q in layers]).sum()
    values = torch.cat([table.flatten(), skipped.reshape(1)]).tolist()  # the one sync
    for _, q in layers:
        q.stats[0] = 0.0  # consumed
    width = table.shape[1]
    out = {}
    for i, (name, _) in enumerate(layers):
        row = values[i * width:(i + 1) * width]
        if row[0]:
            out.update({f"{stat}/{name}": value for stat, value in zip(STAT_NAMES, row[1:])})
    out["grad/skipped_tensors"] = values[-1]
    return out
