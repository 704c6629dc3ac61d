"""torchvision classification models that timm lacks (e.g. mobilenet_v2, Sandler et al. CVPR 2018).

torchvision models are built for 3-channel input; for other channel counts the first Conv2d is replaced by a
fresh one with the same geometry (a module swap: no patched `forward`).
"""
from __future__ import annotations

import torch.nn as nn
import torchvision

from models.width_groups import apply_expand_widths, apply_stage_widths
from models.widths import apply_widths


def replace_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap the first nn.Conv2d (in module order) for one reading `in_channels` channels; returns `model`."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            break
    else:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d to adapt to in_channels={in_channels}")
    if module.in_channels == in_channels:
        return model
    if module.groups != 1:
        raise ValueError(f"first conv {name!r} is grouped (groups={module.groups}); cannot change its input channels")
    new = nn.Conv2d(
        in_channels, module.out_channels, module.kernel_size, stride=module.stride, padding=module.padding,
        dilation=module.dilation, bias=module.bias is not None, padding_mode=module.padding_mode,
    )
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def create(name: str, num_classes: int, in_channels: int = 3, widths: list[int] | None = None,
           stage_widths: list[int] | None = None, expand_widths: list[int] | None = None) -> nn.Module:
    """torchvision.models.get_model(name) with `num_classes` outputs and `in_channels` inputs (random init);
    `widths`: the inner width of every residual block, `stage_widths` of every residual stream, `expand_widths` of
    every inverted residual block (MobileNetV2), e.g. found by the NCE search (models/widths.py)."""
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(f"model.name={name!r} is not a torchvision classification model; e.g. 'mobilenet_v2'")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    model = replace_first_conv(model, in_channels)
    model = apply_stage_widths(model, stage_widths) if stage_widths is not None else model
    model = apply_expand_widths(model, expand_widths) if expand_widths is not None else model
    return apply_widths(model, widths) if widths is not None else model
