"""Per-layer channel widths of residual networks: which widths are free, how to set them, what they cost.

A width is *free* when it is internal to a block: conv_i -> bn_i -> (activation) -> conv_{i+1} inside one module,
where conv_{i+1} reads exactly the channels conv_i writes (BasicBlock's conv1 -> conv2, Bottleneck's conv1 -> conv2
and conv2 -> conv3). The block's output width is tied to its shortcut and stays. The rule finds these pairs by
attribute name, so it covers the CIFAR ResNets (models/resnet_cifar.py), timm's and torchvision's ResNets alike.

    pairs = width_pairs(model)            # [WidthPair('layer1.0', 1), ...]  in module order
    apply_widths(model, [8, 24, ...])     # rebuild those convs / BNs at the given widths (fresh init)
    count_cost(model, example)            # {"macs": ..., "params": ...} of the conv / linear / BN layers
    width_groups(model)                   # every searchable width: the free ones, then the model's residual streams

A residual stream's width (a stage of a ResNet: the stem or the first block's input, every block's output and its
shortcut) is one *tied group*: a model that can change it says so with a `stage_width_groups()` method
(models/resnet_cifar.py) and builds it from `stage_widths: [...]`.

The NCE search (search/nce.py, docs/methods.md §2) searches over these widths and writes the found ones as a
model config (`widths: [...]`), which the model builders pass to apply_widths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class WidthPair:
    """conv{index} -> bn{index} -> conv{index + 1} inside module `block`: conv{index}'s output width is free."""

    block: str
    index: int

    @property
    def name(self) -> str:
        """The producing conv's module name, e.g. 'layer1.0.conv1': how logs and configs name the width."""
        return f"{self.block}.conv{self.index}" if self.block else f"conv{self.index}"

    def modules(self, model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        block = model.get_submodule(self.block)
        return (getattr(block, f"conv{self.index}"), getattr(block, f"bn{self.index}"),
                getattr(block, f"conv{self.index + 1}"))


def _is_pair(block: nn.Module, i: int) -> bool:
    conv, bn, nxt = (getattr(block, f"conv{i}", None), getattr(block, f"bn{i}", None), getattr(block, f"conv{i + 1}", None))
    return (isinstance(conv, nn.Conv2d) and isinstance(nxt, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            and conv.groups == 1 and nxt.groups == 1 and nxt.in_channels == conv.out_channels == bn.num_features)


def width_pairs(model: nn.Module) -> list[WidthPair]:
    """Every free width of `model`, in module order (the order of a config's `widths` list)."""
    pairs = []
    for name, block in model.named_modules():
        if name == "":  # the stem's conv1/bn1 feed the residual stream, not a conv2 of the same module
            continue
        pairs.extend(WidthPair(name, i) for i in range(1, 4) if _is_pair(block, i))
    return pairs


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


def _pair_group(pair: WidthPair) -> WidthGroup:
    prefix = f"{pair.block}." if pair.block else ""
    return WidthGroup(pair.name, (pair.name,), (f"{prefix}bn{pair.index}",), (f"{prefix}conv{pair.index + 1}",))


def width_groups(model: nn.Module, space: str = "all") -> list[WidthGroup]:
    """Every searchable width of `model`: the free widths (config `widths`), then, with space="all", the tied
    residual-stream groups (config `stage_widths`): those the model declares (`stage_width_groups()`), else those
    of a timm / torchvision ResNet layout (resnet_stage_groups)."""
    groups = [_pair_group(pair) for pair in width_pairs(model)]
    if space != "all":
        return groups
    declared = getattr(model, "stage_width_groups", None)
    return groups + (list(declared()) if declared is not None else resnet_stage_groups(model))


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


def apply_stage_widths(model: nn.Module, stage_widths) -> nn.Module:
    """Set every residual stream's width (a list in width_groups order, after the free widths); returns `model`."""
    groups = width_groups(model, "all")[len(width_pairs(model)):]
    stage_widths = list(stage_widths)
    if len(stage_widths) != len(groups) or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                                               for w in stage_widths):
        raise ValueError(f"model.stage_widths={stage_widths} is invalid: {type(model).__name__} has {len(groups)} "
                         f"residual streams ({', '.join(g.name for g in groups)}); give one positive integer each")
    for group, width in zip(groups, stage_widths):
        set_group_width(model, group, width)
    return model


def group_width(model: nn.Module, group: WidthGroup) -> int:
    return model.get_submodule(group.outputs[0]).out_channels


def set_group_width(model: nn.Module, group: WidthGroup, width: int) -> None:
    """Rebuild every layer `group` sizes at `width` channels (freshly initialised; the other side keeps its width)."""
    for name in group.outputs:
        conv = model.get_submodule(name)
        _replace(model, name, _conv_like(conv, conv.in_channels, width))
    for name in group.norms:
        _replace(model, name, _bn_like(model.get_submodule(name), width))
    for name in group.inputs:
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Linear):
            new = nn.Linear(width, layer.out_features, bias=layer.bias is not None)
            nn.init.kaiming_normal_(new.weight)
            _replace(model, name, new)
        else:
            _replace(model, name, _conv_like(layer, width, layer.out_channels))
    for name in group.pad_inputs:
        model.get_submodule(name).in_planes = width
    for name in group.pad_outputs:
        model.get_submodule(name).planes = width


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _conv_like(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    nn.init.kaiming_normal_(new.weight)
    return new


def _bn_like(bn: nn.BatchNorm2d, channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                          track_running_stats=bn.track_running_stats)


def set_width(model: nn.Module, pair: WidthPair, width: int) -> None:
    """Rebuild conv{i} (output), bn{i} and conv{i+1} (input) of one pair at `width` channels, freshly initialised."""
    conv, bn, nxt = pair.modules(model)
    block = model.get_submodule(pair.block)
    setattr(block, f"conv{pair.index}", _conv_like(conv, conv.in_channels, width))
    setattr(block, f"bn{pair.index}", _bn_like(bn, width))
    # conv{i+1}'s input may itself have been resized by the next pair (Bottleneck): keep its current output width
    nxt = getattr(block, f"conv{pair.index + 1}")
    setattr(block, f"conv{pair.index + 1}", _conv_like(nxt, width, nxt.out_channels))


def apply_widths(model: nn.Module, widths) -> nn.Module:
    """Set every free width of `model` (a list in width_pairs order, e.g. from a found config); returns `model`."""
    pairs = width_pairs(model)
    widths = list(widths)
    if len(widths) != len(pairs):
        raise ValueError(f"model.widths has {len(widths)} entries but {type(model).__name__} has {len(pairs)} free widths "
                         f"({', '.join(p.name for p in pairs[:4])}, ...): give one width per layer")
    bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, int) or w < 1]
    if bad:
        raise ValueError(f"model.widths={widths} holds {bad[0]!r}: every width must be a positive integer")
    for pair, width in zip(pairs, widths):
        set_width(model, pair, width)
    return model


def current_widths(model: nn.Module, space: str = "all") -> list[int]:
    """The width of every group of width_groups(model, space), in its order."""
    return [group_width(model, group) for group in width_groups(model, space)]


@dataclass(frozen=True)
class LayerCost:
    """One conv / linear layer's cost as a function of its input and output widths: MACs = macs_per * c_in * c_out,
    params = params_per * c_in * c_out + bias; plus a BatchNorm's 2 * c when one follows (counted by the caller)."""

    name: str
    in_channels: int
    out_channels: int
    macs_per: float   # kernel area / groups x output positions
    params_per: float  # kernel area / groups
    bias: int


def layer_costs(model: nn.Module, example: torch.Tensor) -> list[LayerCost]:
    """Each conv / linear layer's cost terms, from one forward of `example` (a batch of 1 is enough) in eval mode."""
    shapes: dict[str, torch.Size] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: shapes.__setitem__(name, out.shape))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    costs = []
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        out = shapes[name]
        if isinstance(m, nn.Conv2d):
            area = math.prod(m.kernel_size) / m.groups
            costs.append(LayerCost(name, m.in_channels, m.out_channels, area * out[-1] * out[-2], area,
                                   m.out_channels if m.bias is not None else 0))
        else:  # nn.Linear: one output row per position of the leading dims (tokens of a transformer)
            positions = math.prod(out[1:-1]) if len(out) > 2 else 1
            costs.append(LayerCost(name, m.in_features, m.out_features, positions, 1.0,
                                   m.out_features if m.bias is not None else 0))
    return costs


def count_cost(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs per sample of the conv and linear layers, and parameters of those layers and of the BatchNorms."""
    costs = layer_costs(model, example)
    macs = sum(c.macs_per * c.in_channels * c.out_channels for c in costs)
    params = sum(c.params_per * c.in_channels * c.out_channels + c.bias for c in costs)
    params += sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine)
    return {"macs": int(round(macs)), "params": int(round(params))}
