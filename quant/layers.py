"""QConv2d / QLinear: drop-in subclasses that quantize W and A in forward and dL/dY in backward (docs/methods.md §1.1).

They subclass nn.Conv2d / nn.Linear, so `weight` and `bias` keep their names and a full-precision state_dict
loads into them; the quantizers are submodules `wq`, `aq` and `gq`, or nn.Identity for a role kept in full
precision, of the kind the spec's family builds (quant.family: fixed point with learned intervals, or APT).
How a layer computes is its `compute` function: fake quantization (the quantizers around the float op) or, for
`quant.kernel=exact|int8`, the integer-code paths of quant.integer (quant.kernel_rule.choose_kernel).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from quant.families import family_of
from quant.integer import integer_layer_forward
from quant.kernel_rule import choose_kernel, layer_op
from quant.spec import QuantSpec


class QuantizedLayerMixin:
    """Shared by QConv2d and QLinear: the three quantizer submodules, built from a QuantSpec."""

    wq: nn.Module
    aq: nn.Module
    gq: nn.Module

    def attach_quantizers(self, spec: QuantSpec) -> None:
        """(Re)create wq, aq, gq on the weight's device (fresh state: intervals initialise on the next batch), and
        choose how this layer computes (`kernel`: "fake", "exact" or "int8", quant.kernel_rule.choose_kernel)."""
        self.wq, self.aq, self.gq = family_of(spec).quantizers(spec, self.weight.device)  # type: ignore[attr-defined]
        self.set_kernel(spec.kernel)

    def set_kernel(self, kernel: str) -> None:
        """Compute with `kernel` ("fake", "exact" or "int8") where it applies to this layer (`self.kernel`: what it
        runs, quant.kernel_rule.choose_kernel); the quantizers and their state are kept."""
        self.kernel = choose_kernel(self, kernel)  # type: ignore[arg-type]
        integer = self.kernel != "fake"
        self.op = layer_op(self, self.kernel) if integer else None  # type: ignore[arg-type]
        # on integer codes (docs/methods.md §1.9), or the quantizers around the float op
        self.compute = integer_layer_forward if integer else type(self).fake_forward

    def _share_parameters(self, layer: nn.Module, spec: QuantSpec):
        """Take over `layer`'s Parameter objects (names, sharing, optimizer references) and its train/eval mode."""
        self.weight, self.bias = layer.weight, layer.bias
        self.attach_quantizers(spec)  # built on "meta" by __init__; now on the real device
        return self.train(layer.training)


class QConv2d(QuantizedLayerMixin, nn.Conv2d):
    """nn.Conv2d with quantized weights, inputs and output gradient."""

    def __init__(self, *args, spec: QuantSpec, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attach_quantizers(spec)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, spec: QuantSpec) -> "QConv2d":
        """A QConv2d that shares `conv`'s weight and bias tensors."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, spec=spec, device="meta")
        return q._share_parameters(conv, spec)

    def forward(self, x: Tensor) -> Tensor:
        return self.compute(self, x)

    def fake_forward(self, x: Tensor) -> Tensor:
        y = self._conv_forward(self.aq(x), self.wq(self.weight), self.bias)  # (B, C_out, H', W')
        return self.gq(y)


class QLinear(QuantizedLayerMixin, nn.Linear):
    """nn.Linear with quantized weights, inputs and output gradient."""

    def __init__(self, *args, spec: QuantSpec, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attach_quantizers(spec)

    @classmethod
    def from_float(cls, linear: nn.Linear, spec: QuantSpec) -> "QLinear":
        """A QLinear that shares `linear`'s weight and bias tensors."""
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, spec=spec, device="meta")
        return q._share_parameters(linear, spec)

    def forward(self, x: Tensor) -> Tensor:
        return self.compute(self, x)

    def fake_forward(self, x: Tensor) -> Tensor:
        y = F.linear(self.aq(x), self.wq(self.weight), self.bias)  # (..., out_features)
        return self.gq(y)
