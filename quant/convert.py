"""quantize_: swap nn.Conv2d / nn.Linear for QConv2d / QLinear in place, in any nn.Module (ours, timm, torchvision).

Only exact nn.Conv2d and nn.Linear are swapped: subclasses (timm's Conv2dSame/StdConv2d, the out_proj of
nn.MultiheadAttention, already-quantized layers) have their own forward or are used through their weight only.
"""
from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatch

import torch.nn as nn

from quant.forward import ActQuantizer, WeightQuantizer
from quant.fused import set_fused
from quant.layers import QConv2d, QLinear
from quant.spec import QuantSpec

_SWAPS = {nn.Conv2d: QConv2d, nn.Linear: QLinear}


def _kept_first_last(candidates: list[tuple[str, nn.Module]]) -> set[str]:
    """Names of the first nn.Conv2d and the last nn.Linear, in named_modules order (docs/methods.md §1.1)."""
    convs = [name for name, m in candidates if type(m) is nn.Conv2d]
    linears = [name for name, m in candidates if type(m) is nn.Linear]
    return set(convs[:1] + linears[-1:])


def quantize_(model: nn.Module, spec: QuantSpec,
              filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Swap, in place, every nn.Conv2d / nn.Linear of `model` that the spec and `filter_fn` select; returns model.

    Kept in full precision: the first conv and last linear when `spec.keep_first_last`, names matching any
    `spec.keep_fp` pattern, and modules for which `filter_fn(module, name)` is False. Parameter names and
    full-precision state_dict keys are unchanged. A full-precision spec leaves the model untouched. A `keep_fp`
    pattern that matches no conv or linear layer is a ValueError.
    """
    if spec.is_full_precision:
        return model
    set_fused(spec.fused)  # process-wide: how eager quantizers run from now on (quant.fused)
    candidates = [(name, m) for name, m in model.named_modules() if type(m) in _SWAPS]
    names = [name for name, _ in candidates]
    for pattern in spec.keep_fp:  # a typo would silently quantize the layer it meant to keep
        if not any(fnmatch(name, pattern) for name in names):
            raise ValueError(f"quant.keep_fp pattern {pattern!r} matches no conv or linear layer of "
                             f"{type(model).__name__}: its layers are named like {', '.join(names[:3])}, ...")
    kept = _kept_first_last(candidates) if spec.keep_first_last else set()
    for name, module in candidates:
        if name in kept or any(fnmatch(name, pattern) for pattern in spec.keep_fp):
            continue
        if filter_fn is not None and not filter_fn(module, name):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, _SWAPS[type(module)].from_float(module, spec))
    return model


def quant_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable intervals (s_W, u_A) of every quantized layer, for their own optimizer group (§1.4 of
    docs/methods.md)."""
    params = []
    for m in model.modules():
        if isinstance(m, WeightQuantizer):
            params.append(m.scale)
        elif isinstance(m, ActQuantizer):
            params.append(m.upper)
    return params
