"""The trained fixed-point network, out of the framework: integer weight codes and scales, and a Q/DQ ONNX graph.

Every value a quantized layer computes with is `code * step` with an integer code (docs/methods.md §1.2, §1.4):
- weights: code = k - zero in [-zero, levels - zero] (quant.primitives.weight_levels: [-(2^(b-1) - 1), 2^(b-1) - 1]
  on the symmetric grid, [-2^(b-1), 2^(b-1) - 1] on the signed one), step = s_W / zero;
- activations: unsigned, code in [0, 2^b - 1], step = u_A / (2^b - 1); or, if the layer's first batch had negative
  inputs, symmetric, code in [-(2^(b-1) - 1), 2^(b-1) - 1], step = 2 u_A / (2^b - 2).
`integer_tensors` lists them (int8 codes, float32 steps) with everything else the network needs in float (the
full-precision first and last layers, BatchNorm, biases); `qdq_model` is a copy of the network in plain torch ops
whose ONNX export (torch.onnx.export, TorchScript exporter) has activations as `Clip -> QuantizeLinear ->
DequantizeLinear` (the Clip gives the b-bit range inside uint8/int8); `int8_weights` then stores each quantized
weight as int8 codes with a DequantizeLinear (the exporter cannot give a convolution a Q/DQ'd weight: it loses the
kernel's shape). Both are 8-bit formats with zero point 0, so grids of up to 8 bits are Q/DQ; a wider role is rounded
with Clip/Round/Mul (activations) or kept as float values on its grid (weights) instead, and listed as such.

Only the fixed-point quantizers (quant/forward.py) are exported; APT's adaptive formats are not (one-line error).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from quant.forward import ActQuantizer, WeightQuantizer
from quant.layers import QConv2d, QLinear
from quant.primitives import unsigned_levels, weight_levels

Q_DQ_MAX_BITS = 8  # QuantizeLinear's uint8/int8 with zero point 0 holds every code of a grid of up to 8 bits


class ExportError(ValueError):
    """A network this exporter cannot write (one line, naming the layer and what would work)."""


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (QConv2d, QLinear))]
    for name, m in layers:
        for role, q, kind in (("weight", m.wq, WeightQuantizer), ("activation", m.aq, ActQuantizer)):
            if not isinstance(q, (kind, nn.Identity)):
                raise ExportError(f"layer {name}: its {role} quantizer is {type(q).__name__}; only the fixed-point "
                                  f"quantizers (quant=fixed_point) are exported, not quant=apt's adaptive formats")
            if isinstance(q, kind) and q.needs_init:
                raise ExportError(f"layer {name}: its {role} interval was never initialised (the checkpoint is from "
                                  f"before the first training step): export a trained run")
    return layers


def weight_format(wq: WeightQuantizer) -> tuple[Tensor, int, int]:
    """(step, lowest code, highest code) of the weight grid."""
    levels, zero = weight_levels(wq.bits, wq.grid)
    return wq.scale.detach().abs() * 1.0 / zero, -zero, levels - zero


def act_format(aq: ActQuantizer) -> tuple[Tensor, int, int]:
    """(step, lowest code, highest code) of the activation grid, computed as quant.forward.fake_quantize does."""
    signed = aq.signed.detach()
    levels = unsigned_levels(aq.bits) - signed
    step = aq.upper.detach().abs() * (1 + signed) / levels
    half = 2 ** (aq.bits - 1) - 1
    return step, (-half if bool(signed) else 0), (half if bool(signed) else 2**aq.bits - 1)


def weight_codes(layer: nn.Module) -> Tensor:
    """The signed integer code of every weight (int8 when the grid fits in 8 bits, else int16/int32)."""
    _, low, high = weight_format(layer.wq)
    zero = -low
    codes = layer.wq.codes(layer.weight) - zero
    dtype = torch.int8 if high <= 127 and low >= -128 else torch.int16 if high < 2**15 else torch.int32
    return codes.to(dtype)


def integer_tensors(model: nn.Module) -> tuple[dict[str, Tensor], dict]:
    """(tensors, manifest): per quantized layer `<name>.weight_codes`, `<name>.weight_step`, `<name>.act_step`,
    its bias, and every other parameter and buffer of the network in float32 (quantizer state and the quantized
    layers' latent float weights left out); the manifest says what each layer's codes mean."""
    layers = dict(quantized_layers(model))
    tensors, manifest = {}, {"layers": {}, "float": []}
    for name, layer in layers.items():
        entry = {"op": "conv2d" if isinstance(layer, QConv2d) else "linear", "weight": None, "activation": None}
        if isinstance(layer, QConv2d):
            entry.update(stride=list(layer.stride), padding=list(layer.padding), dilation=list(layer.dilation),
                         groups=layer.groups)
        if isinstance(layer.wq, WeightQuantizer):
            step, low, high = weight_format(layer.wq)
            tensors[f"{name}.weight_codes"] = weight_codes(layer)
            tensors[f"{name}.weight_step"] = step.float().reshape(1)
            entry["weight"] = {"bits": layer.wq.bits, "grid": layer.wq.grid, "codes": [low, high],
                               "value": "weight_codes * weight_step"}
        else:
            tensors[f"{name}.weight"] = layer.weight.detach().float()
        if isinstance(layer.aq, ActQuantizer):
            step, low, high = act_format(layer.aq)
            tensors[f"{name}.act_step"] = step.float().reshape(1)
            entry["activation"] = {"bits": layer.aq.bits, "signed": bool(layer.aq.signed), "codes": [low, high],
                                   "value": "clamp(round(x / act_step), codes) * act_step"}
        if layer.bias is not None:
            tensors[f"{name}.bias"] = layer.bias.detach().float()
        manifest["layers"][name] = entry
    skip = tuple(f"{name}." for name in layers)
    for key, value in model.state_dict().items():  # integer buffers (BatchNorm's num_batches_tracked): not needed
        if not key.startswith(skip) and value.is_floating_point():
            tensors[key] = value.detach().float()
            manifest["float"].append(key)
    return {k: v.contiguous().cpu() for k, v in tensors.items()}, manifest


def _fake_quantize(x: Tensor, step: Tensor, low: int, high: int) -> Tensor:
    """clamp(round(x / step), low, high) * step: Q/DQ (8-bit, zero point 0) where the codes fit, float otherwise."""
    qmin, qmax = (0, 255) if low >= 0 else (-128, 127)
    if qmin <= low and high <= qmax:
        x = torch.clamp(x, low * step, high * step) if (low, high) != (qmin, qmax) else x
        return torch.fake_quantize_per_tensor_affine(x, step, 0, qmin, qmax)
    return torch.clamp(torch.round(x / step), low, high) * step


class QDQLayer(nn.Module):
    """A quantized conv or linear layer as plain torch ops that export to Q/DQ ONNX (see module docstring)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.conv = isinstance(layer, QConv2d)
        self.conv_args = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                              groups=layer.groups) if self.conv else {}
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        if isinstance(layer.wq, WeightQuantizer):
            step, low, high = weight_format(layer.wq)
            self.register_buffer("weight", (weight_codes(layer).float() * step).contiguous())
            self.weight_format = (float(step), low, high)
        else:
            self.register_buffer("weight", layer.weight.detach().clone().contiguous())
            self.weight_format = None
        self.act_format = None
        if isinstance(layer.aq, ActQuantizer):
            step, low, high = act_format(layer.aq)
            self.act_format = (float(step), low, high)

    def forward(self, x: Tensor) -> Tensor:
        if self.act_format is not None:
            x = _fake_quantize(x, *self.act_format)
        w = self.weight  # on its grid already; the ONNX file stores it as int8 codes + DequantizeLinear (int8_weights)
        if self.conv:
            return F.conv2d(x, w, self.bias, **self.conv_args)
        return F.linear(x, w, self.bias)


def qdq_model(model: nn.Module) -> nn.Module:
    """A copy of `model` (in eval mode, on the CPU) whose quantized layers are QDQLayers."""
    export = copy.deepcopy(model).cpu().eval()
    for name, layer in quantized_layers(export):
        parent_name, _, child = name.rpartition(".")
        setattr(export.get_submodule(parent_name), child, QDQLayer(layer))
    return export


def not_qdq(model: nn.Module) -> list[str]:
    """`<layer>.weight` / `<layer>.activation` roles wider than 8 bits: rounded in float ops, not Q/DQ, in ONNX."""
    out = []
    for name, layer in quantized_layers(model):
        for role, q in (("weight", layer.wq), ("activation", layer.aq)):
            if not isinstance(q, nn.Identity) and q.bits > Q_DQ_MAX_BITS:
                out.append(f"{name}.{role}")
    return out


def int8_weights(model_proto, export: nn.Module) -> int:
    """In the ONNX model of `export` (a qdq_model), replace each quantized layer's float weight initializer
    `<layer>.weight` by int8 codes `<layer>.weight_codes` and a DequantizeLinear (scale `<layer>.weight_step`, zero
    point 0) whose output keeps the name the Conv/Gemm reads. Returns how many weights were rewritten."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes, rewritten = [], 0
    for name, layer in export.named_modules():
        if not isinstance(layer, QDQLayer) or layer.weight_format is None:
            continue
        step, low, high = layer.weight_format
        init = initializers.get(f"{name}.weight")
        if init is None or not (-128 <= low and high <= 127):  # folded into another constant, or wider than int8
            continue
        codes = np.rint(numpy_helper.to_array(init) / np.float32(step)).astype(np.int8)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(codes, f"{name}.weight_codes"),
                                  numpy_helper.from_array(np.array(step, dtype=np.float32), f"{name}.weight_step"),
                                  numpy_helper.from_array(np.array(0, dtype=np.int8), f"{name}.weight_zero")])
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}.weight_codes", f"{name}.weight_step",
                                                           f"{name}.weight_zero"], [f"{name}.weight"],
                                      name=f"{name}.weight_dequantize"))
        rewritten += 1
    for node in reversed(nodes):  # before every node: the graph stays topologically sorted
        graph.node.insert(0, node)
    return rewritten
