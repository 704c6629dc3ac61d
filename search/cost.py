"""What a width choice costs: NCE's expected MACs and params under the width softmaxes (docs/methods.md §2)."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from models.width_groups import WidthGroup
from models.widths import LayerCost, layer_costs
from search.supernet import WidthChoice, WidthMixture


class ExpectedCost:
    """MACs and params of a supernet at given widths, or their expectation under its width softmaxes.

    Every conv / linear layer costs `per * c_in * c_out`; each group's width is an independent random variable, so
    E[c_in * c_out] = E[c_in] * E[c_out] and the expectation is exact and differentiable in the logits. At one-hot
    logits it is the count of the discrete network (models.widths.count_cost).
    """

    def __init__(self, model: nn.Module, example: Tensor, choices: dict[str, WidthChoice],
                 groups: list[WidthGroup]) -> None:
        self.costs: list[LayerCost] = layer_costs(model, example)
        self.out_choice = {conv: g.name for g in groups for conv in g.outputs}  # layer -> the group deciding its output
        self.in_choice = {layer: g.name for g in groups for layer in g.inputs}  # ... and its input
        self.depthwise = {conv: g.name for g in groups for conv in g.depthwise}  # in = out = groups: linear in it
        self.norms = {g.name: len(g.norms) for g in groups}  # each followed output has a BatchNorm: 2 c params
        mixtures = {id(m.bn) for m in model.modules() if isinstance(m, WidthMixture)}
        self.fixed_bn_params = sum(2 * m.num_features for m in model.modules()
                                   if isinstance(m, nn.BatchNorm2d) and m.affine and id(m) not in mixtures)
        self.choices = choices

    def __call__(self) -> tuple[Tensor, Tensor]:
        """(E[MACs], E[params]) under the current softmaxes."""
        return self.at({name: choice.expected_width() for name, choice in self.choices.items()})

    def at(self, widths: dict) -> tuple:
        """(MACs, params) with each group's width (by its name) at `widths[name]`: ints give the discrete
        network's count, expected widths (tensors) the expectation."""
        macs = params = 0.0
        for c in self.costs:
            if c.name in self.depthwise:  # built at groups = in = out = W: per * W is the cost of one channel
                width = widths[self.depthwise[c.name]]
                macs = macs + c.macs_per * c.in_channels * width
                params = params + c.params_per * c.in_channels * width + (width if c.bias else 0)
                continue
            cin = widths[self.in_choice[c.name]] if c.name in self.in_choice else c.in_channels
            cout = widths[self.out_choice[c.name]] if c.name in self.out_choice else c.out_channels
            macs = macs + c.macs_per * cin * cout
            params = params + c.params_per * cin * cout + (cout if c.bias else 0)
        return macs, params + self.fixed_bn_params + sum(2 * n * widths[name] for name, n in self.norms.items())
