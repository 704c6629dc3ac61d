"""Any timm model by name (Wightman, pytorch-image-models): ImageNet ResNet-18/34/50 and friends.

timm builds the network for `num_classes` and `in_chans` itself, so 1-channel inputs need no patching. Global
pooling lets these models accept small inputs (28x28 or 32x32) as well as 224x224.
"""
from __future__ import annotations

import timm
import torch.nn as nn

from models.width_groups import apply_stage_widths
from models.widths import apply_widths


def create(name: str, num_classes: int, in_channels: int = 3, pretrained: bool = False,
           widths: list[int] | None = None, stage_widths: list[int] | None = None) -> nn.Module:
    """timm.create_model(name) with a `num_classes` head and `in_channels` input channels.

    `pretrained=True` needs the weights in the local timm/HF cache (this project adds no runtime downloads).
    `widths`: the inner width of every residual block, `stage_widths` of every residual stream (models/widths.py),
    e.g. found by the NCE search.
    """
    if not timm.is_model(name):
        raise ValueError(f"model.name={name!r} is not a timm model; see timm.list_models() (e.g. 'resnet18')")
    if (widths is not None or stage_widths is not None) and pretrained:
        raise ValueError("model.widths / stage_widths with model.pretrained=true: resized layers have no pretrained "
                         "weights")
    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels)
    model = apply_stage_widths(model, stage_widths) if stage_widths is not None else model
    return apply_widths(model, widths) if widths is not None else model
