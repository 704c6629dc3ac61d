"""What a width choice costs: NCE's expected MACs and params under the width softmaxes (docs/methods.md §2)."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from models.widths import LayerCost, layer_costs
from search.supernet import WidthChoice, WidthMixture


class ExpectedCost:
    """MACs and params of a supernet at given widths, or their expectation under its width softmaxes.

    Every conv / linear layer costs `per * c_in * c_out`; a free width is an independent random variable, so
    E[c_in * c_out] = E[c_in] * E[c_out] and the expectation is exact and differentiable in the logits. At one-hot
    logits it is the count of the discrete network (models.widths.count_cost).
    """

    def __init__(self, model: nn.Module, example: Tensor, choices: dict[str, WidthChoice]) -> None:
        self.costs: list[LayerCost] = layer_costs(model, example)
        self.names = list(choices)
        self.out_choice = {name: name for name in choices}  # conv name -> the free width deciding its output
        self.in_choice = {}  # conv name -> the free width deciding its input: conv_i's width is conv_(i+1)'s input
        for name in choices:
            prefix, index = name.rsplit("conv", 1)
            self.in_choice[f"{prefix}conv{int(index) + 1}"] = name
        mixtures = {id(m.bn) for m in model.modules() if isinstance(m, WidthMixture)}
        self.fixed_bn_params = sum(2 * m.num_features for m in model.modules()
                                   if isinstance(m, nn.BatchNorm2d) and m.affine and id(m) not in mixtures)
        self.choices = choices

    def __call__(self) -> tuple[Tensor, Tensor]:
        """(E[MACs], E[params]) under the current softmaxes."""
        return self.at({name: choice.expected_width() for name, choice in self.choices.items()})

    def at(self, widths: dict) -> tuple:
        """(MACs, params) with each free width (by its conv's name) at `widths[name]`: ints give the discrete
        network's count, expected widths (tensors) the expectation."""
        macs = params = 0.0
        for c in self.costs:
            cin = widths[self.in_choice[c.name]] if c.name in self.in_choice else c.in_channels
            cout = widths[self.out_choice[c.name]] if c.name in self.out_choice else c.out_channels
            macs = macs + c.macs_per * cin * cout
            params = params + c.params_per * cin * cout + (cout if c.bias else 0)
        return macs, params + self.fixed_bn_params + sum(2 * widths[name] for name in self.names)
