"""Tied widths: every searchable width of a network as a WidthGroup (the layers one width sizes), found for
residual blocks (models.widths.width_pairs), residual streams (a model's `stage_width_groups()`, or the timm /
torchvision ResNet layout) and inverted residual blocks (MobileNetV2's expansion widths); setting a group's width
and building a found network's `stage_widths` / `expand_widths` (docs/methods.md §2.1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from models.widths import WidthPair, bn_like, conv_like, width_pairs


@dataclass(frozen=True)
class WidthGroup:
    """One searchable width and every layer it sizes: the convs it is the output of (each followed by one of
    `norms`), the convs / linears that read it, and the parameter-free shortcuts that read (`pad_inputs`) or write
    (`pad_outputs`) it. `config_key`: the model config's list that holds it (`widths` or `stage_widths`)."""

    name: str
    outputs: tuple[str, ...]
    norms: tuple[str, ...]
    inputs: tuple[str, ...]
    config_key: str = "widths"
    pad_inputs: tuple[str, ...] = ()
    pad_outputs: tuple[str, ...] = ()
    depthwise: tuple[str, ...] = ()  # depthwise convs that both read and write it (groups = the width)


def _pair_group(pair: WidthPair) -> WidthGroup:
    prefix = f"{pair.block}." if pair.block else ""
    return WidthGroup(pair.name, (pair.name,), (f"{prefix}bn{pair.index}",), (f"{prefix}conv{pair.index + 1}",))


def width_groups(model: nn.Module, space: str = "all") -> list[WidthGroup]:
    """Every searchable width of `model`: the free widths (config `widths`), then, with space="all", the tied
    residual-stream groups (config `stage_widths`): those the model declares (`stage_width_groups()`), else those
    of a timm / torchvision ResNet layout (resnet_stage_groups)."""
    groups = [_pair_group(pair) for pair in width_pairs(model)] + inverted_residual_groups(model)
    if space != "all":
        return groups
    declared = getattr(model, "stage_width_groups", None)
    return groups + (list(declared()) if declared is not None else resnet_stage_groups(model))


def _is_conv_bn(seq: nn.Module, depthwise: bool) -> bool:
    if not (isinstance(seq, nn.Sequential) and len(seq) >= 2 and isinstance(seq[0], nn.Conv2d)
            and isinstance(seq[1], nn.BatchNorm2d)):
        return False
    conv = seq[0]
    return (conv.groups == conv.in_channels == conv.out_channels) if depthwise else conv.groups == 1


def inverted_residual_groups(model: nn.Module) -> list[WidthGroup]:
    """The expansion width of every inverted residual block (MobileNetV2: `conv` = [1x1 conv-BN-act, depthwise
    3x3 conv-BN-act, 1x1 conv, BN]): written by the 1x1 expansion, carried through the depthwise conv, read by the
    projection. Config `expand_widths`. Blocks without an expansion (expand ratio 1) have none."""
    groups = []
    for name, block in model.named_modules():
        seq = getattr(block, "conv", None)
        if not (isinstance(seq, nn.Sequential) and len(seq) == 4 and _is_conv_bn(seq[0], False)
                and _is_conv_bn(seq[1], True) and isinstance(seq[2], nn.Conv2d) and seq[2].groups == 1):
            continue
        p = f"{name}.conv"
        groups.append(WidthGroup(f"{name}.expand", (f"{p}.0.0",), (f"{p}.0.1", f"{p}.1.1"), (f"{p}.2",),
                                 "expand_widths", depthwise=(f"{p}.1.0",)))
    return groups


def resnet_stage_groups(model: nn.Module) -> list[WidthGroup]:
    """The residual streams of a timm / torchvision ResNet (conv1/bn1 stem, layer1..layer4, fc): stage s's width is
    written by every block's last conv (conv2 or conv3) and its projection (downsample.0, downsample.1 its BN) and
    read by the next block's conv1 and projection, the next stage's first block, or fc. The stem is a group of its
    own when layer1 starts with a projection (Bottleneck ResNets), else part of stage 1. [] for other layouts."""
    stages = [getattr(model, f"layer{s}", None) for s in range(1, 5)]
    stages = [st for st in stages if isinstance(st, nn.Sequential) and len(st)]
    if not (stages and isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(getattr(model, "fc", None), nn.Linear)):
        return []

    def last(block) -> int:
        return max(i for i in range(1, 4) if isinstance(getattr(block, f"conv{i}", None), nn.Conv2d))

    def projection(s: int, i: int) -> bool:
        down = getattr(stages[s - 1][i], "downsample", None)
        return isinstance(down, nn.Sequential) and len(down) == 2 and isinstance(down[0], nn.Conv2d)

    def readers(s: int) -> list[str]:  # what reads the stream that enters stage s's first block
        return [f"layer{s}.0.conv1"] + ([f"layer{s}.0.downsample.0"] if projection(s, 0) else [])

    groups, stem_alone = [], projection(1, 0)
    if stem_alone:
        groups.append(WidthGroup("stem", ("conv1",), ("bn1",), tuple(readers(1)), "stage_widths"))
    for s in range(1, len(stages) + 1):
        blocks = range(len(stages[s - 1]))
        outputs = [f"layer{s}.{i}.conv{last(stages[s - 1][i])}" for i in blocks]
        norms = [f"layer{s}.{i}.bn{last(stages[s - 1][i])}" for i in blocks]
        outputs += [f"layer{s}.{i}.downsample.0" for i in blocks if projection(s, i)]
        norms += [f"layer{s}.{i}.downsample.1" for i in blocks if projection(s, i)]
        inputs = [f"layer{s}.{i}.conv1" for i in blocks if i > 0] + [f"layer{s}.{i}.downsample.0" for i in blocks
                                                                      if i > 0 and projection(s, i)]
        inputs += readers(s + 1) if s < len(stages) else ["fc"]
        if s == 1 and not stem_alone:
            outputs, norms, inputs = ["conv1", *outputs], ["bn1", *norms], [*readers(1), *inputs]
        groups.append(WidthGroup(f"stage{s}", tuple(outputs), tuple(norms), tuple(inputs), "stage_widths"))
    return groups


def _apply(model: nn.Module, key: str, widths, what: str) -> nn.Module:
    """Set the width of every group whose config list is `key` (in width_groups order); returns `model`."""
    groups, widths = [g for g in width_groups(model, "all") if g.config_key == key], list(widths)
    if len(widths) != len(groups) or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"model.{key}={widths} is invalid: {type(model).__name__} has {len(groups)} {what} "
                         f"({', '.join(g.name for g in groups[:4])}{', ...' if len(groups) > 4 else ''}); give one "
                         f"positive integer each")
    for group, width in zip(groups, widths):
        set_group_width(model, group, width)
    return model


def apply_expand_widths(model: nn.Module, expand_widths) -> nn.Module:
    """Set every inverted residual block's expansion width (a list in module order); returns `model`."""
    return _apply(model, "expand_widths", expand_widths, "expanding blocks")


def apply_stage_widths(model: nn.Module, stage_widths) -> nn.Module:
    """Set every residual stream's width (a list in width_groups order, after the free widths); returns `model`."""
    return _apply(model, "stage_widths", stage_widths, "residual streams")


def group_width(model: nn.Module, group: WidthGroup) -> int:
    return model.get_submodule(group.outputs[0]).out_channels


def set_group_width(model: nn.Module, group: WidthGroup, width: int) -> None:
    """Rebuild every layer `group` sizes at `width` channels (freshly initialised; the other side keeps its width)."""
    for name in group.outputs:
        conv = model.get_submodule(name)
        _replace(model, name, conv_like(conv, conv.in_channels, width))
    for name in group.depthwise:
        conv = model.get_submodule(name)
        new = nn.Conv2d(width, width, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                        dilation=conv.dilation, groups=width, bias=conv.bias is not None)
        nn.init.kaiming_normal_(new.weight)
        _replace(model, name, new)
    for name in group.norms:
        _replace(model, name, bn_like(model.get_submodule(name), width))
    for name in group.inputs:
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Linear):
            new = nn.Linear(width, layer.out_features, bias=layer.bias is not None)
            nn.init.kaiming_normal_(new.weight)
            _replace(model, name, new)
        else:
            _replace(model, name, conv_like(layer, width, layer.out_channels))
    for name in group.pad_inputs:
        model.get_submodule(name).in_planes = width
    for name in group.pad_outputs:
        model.get_submodule(name).planes = width


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def current_widths(model: nn.Module, space: str = "all") -> list[int]:
    """The width of every group of width_groups(model, space), in its order."""
    return [group_width(model, group) for group in width_groups(model, space)]
