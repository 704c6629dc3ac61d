"""Per-layer channel widths of residual networks: which widths are free, how to set them, what they cost.

A width is *free* when it is internal to a block: conv_i -> bn_i -> (activation) -> conv_{i+1} inside one module,
where conv_{i+1} reads exactly the channels conv_i writes (BasicBlock's conv1 -> conv2, Bottleneck's conv1 -> conv2
and conv2 -> conv3). The block's output width is tied to its shortcut and stays. The rule finds these pairs by
attribute name, so it covers the CIFAR ResNets (models/resnet_cifar.py), timm's and torchvision's ResNets alike.

    pairs = width_pairs(model)            # [WidthPair('layer1.0', 1), ...]  in module order
    apply_widths(model, [8, 24, ...])     # rebuild those convs / BNs at the given widths (fresh init)
    count_cost(model, example)            # {"macs": ..., "params": ...} of the conv / linear / BN layers

Tied widths (residual streams, MobileNetV2's expansion widths) and every searchable width as a group:
models/width_groups.py.

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


def conv_like(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    nn.init.kaiming_normal_(new.weight)
    return new


def bn_like(bn: nn.BatchNorm2d, channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                          track_running_stats=bn.track_running_stats)


def set_width(model: nn.Module, pair: WidthPair, width: int) -> None:
    """Rebuild conv{i} (output), bn{i} and conv{i+1} (input) of one pair at `width` channels, freshly initialised."""
    conv, bn, nxt = pair.modules(model)
    block = model.get_submodule(pair.block)
    setattr(block, f"conv{pair.index}", conv_like(conv, conv.in_channels, width))
    setattr(block, f"bn{pair.index}", bn_like(bn, width))
    # conv{i+1}'s input may itself have been resized by the next pair (Bottleneck): keep its current output width
    nxt = getattr(block, f"conv{pair.index + 1}")
    setattr(block, f"conv{pair.index + 1}", conv_like(nxt, width, nxt.out_channels))


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
