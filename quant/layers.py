"""QConv2d / QLinear: drop-in subclasses that quantize W and A in forward and dL/dY in backward (docs/methods.md §1.1).

They subclass nn.Conv2d / nn.Linear, so `weight` and `bias` keep their names and a full-precision state_dict
loads into them; the quantizers are submodules `wq` (s_W), `aq` (u_A) and `gq` (gamma, counters), or
nn.Identity for a role kept in full precision. Under APT (QuantSpec.precision) they are quant.apt_layers'
adaptive-precision quantizers instead.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from quant.apt_layers import AptGradQuantizer, AptQuantizer
from quant.forward import ActQuantizer, WeightQuantizer
from quant.gradient import GradQuantizer
from quant.integer import integer_layer_forward
from quant.kernel_rule import choose_kernel, layer_op
from quant.spec import QuantSpec


def _quantizers(spec: QuantSpec, device) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(wq, aq, gq) for one layer; nn.Identity where the spec keeps that role in full precision."""
    if spec.precision is not None:  # APT: adaptive bit-widths, power-of-two scales (docs/methods.md §4)
        policy = spec.precision
        return (AptQuantizer("w", spec.w_bits, policy, device, grid=spec.weight_grid) if spec.w_bits else nn.Identity(),
                AptQuantizer("a", spec.a_bits, policy, device) if spec.a_bits else nn.Identity(),
                AptGradQuantizer(spec.g_bits, policy, device) if spec.g_bits else nn.Identity())
    wq = WeightQuantizer(spec.w_bits, device=device, grid=spec.weight_grid) if spec.w_bits else nn.Identity()
    aq = ActQuantizer(spec.a_bits, device=device) if spec.a_bits else nn.Identity()
    gq = GradQuantizer(spec.g_bits, spec.grad, large_fraction=spec.large_fraction, device=device) \
        if spec.g_bits else nn.Identity()
    return wq, aq, gq


class QuantizedLayerMixin:
    """Shared by QConv2d and QLinear: the three quantizer submodules, built from a QuantSpec."""

    wq: nn.Module
    aq: nn.Module
    gq: nn.Module

    def attach_quantizers(self, spec: QuantSpec) -> None:
        """(Re)create wq, aq, gq on the weight's device (fresh state: intervals initialise on the next batch), and
        choose how this layer computes (`kernel`: "fake", "exact" or "int8", quant.kernel_rule.choose_kernel)."""
        self.wq, self.aq, self.gq = _quantizers(spec, self.weight.device)  # type: ignore[attr-defined]
        self.set_kernel(spec.kernel)

    def set_kernel(self, kernel: str) -> None:
        """Compute with `kernel` ("fake", "exact" or "int8") where it applies to this layer (`self.kernel`: what it
        runs, quant.kernel_rule.choose_kernel); the quantizers and their state are kept."""
        self.kernel = choose_kernel(self, kernel)  # type: ignore[arg-type]
        self.op = layer_op(self, self.kernel) if self.kernel != "fake" else None  # type: ignore[arg-type]

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
        if self.kernel != "fake":
            return integer_layer_forward(self, x)  # on integer codes (docs/methods.md §1.9)
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
        if self.kernel != "fake":
            return integer_layer_forward(self, x)  # on integer codes (docs/methods.md §1.9)
        y = F.linear(self.aq(x), self.wq(self.weight), self.bias)  # (..., out_features)
        return self.gq(y)
