"""Which kernel each quantized layer runs under `quant.kernel` (docs/methods.md §1.9): the channel and pixel rules
measured on this project's CPUs, what a layer's op is (LayerOp), and the run summary's per-layer list. quant.integer
computes the chosen kernels; these constants are module attributes so that benchmarks and tests can set a rule."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from quant.unwrap import unwrap

# Narrower GEMMs run "exact": int8 breaks even at 64 features and loses below (results/bench/int8_cpu_vit_rerun.md).
INT8_MIN_WIDTH = 64
# Convolutions with a kernel larger than 1x1 run their forward int8 from INT8_MIN_CONV_CHANNELS input and output
# channels, dL/dX from INT8_MIN_CONV_INPUT_GRAD_CHANNELS and dL/dW from INT8_MIN_CONV_BACKWARD_CHANNELS; narrower
# than that, dL/dW is the exact path's float32 op on float codes. Alone at ResNet-20's 16 and 32 channels (32x32 and
# 16x16, batch 128), oneDNN's int8 forward is 2.8x the fp32 convolution's speed and its dL/dX 2.4x (1.6 against
# 3.9 ms at 16 channels), while dL/dW through quant.im2col loses (its im2col copy alone costs 3.3x an fp32 conv).
# ResNet-20's compiled step in one process, ratio to compiled FP32: W4A4G4 forward from 16, dX from 16, dW from 64
# (this rule) against the forward alone from 16 (16/64/64): results/bench/cpu_resnet20_dx.md; W8, older rules
# (results/bench/cpu_resnet20_rules.md): 16/64/64 1.00x, all from 64 1.10x, all from 16 1.07x, forward from 32 1.05x.
INT8_MIN_CONV_CHANNELS = 16
INT8_MIN_CONV_INPUT_GRAD_CHANNELS = 16
INT8_MIN_CONV_BACKWARD_CHANNELS = 64
# An int8 convolution with at least this many output pixels (batch x Ho x Wo) runs as oneDNN's direct int8
# convolution (quant.direct_conv), fewer through quant.im2col: oneDNN reorders the weights on every call, which
# only pays over enough pixels (results/bench/int8_direct_conv.md). A convolution narrower than
# INT8_MIN_CONV_BACKWARD_CHANNELS with fewer pixels runs exact: im2col at 16 channels costs 3.3x the fp32 conv.
DIRECT_CONV_MIN_PIXELS = 4096


def int8_refusal() -> str | None:
    """Why quant.kernel=int8 is refused on this machine, or None. A CPU without VNNI (AVX-512 VNNI, AVX-VNNI or
    AMX: int8 dot products) runs torch._int_mm and oneDNN's int8 convolution through other code: on a 2-core AVX2
    EPYC a ResNet-20 W4A4G4 eager step took 2.2 s with int8 against 0.35 s fake (FP32: 0.26 s; one _int_mm call
    576 ms), and the int8 ResNet-20's first loss was 3.9735 against the exact kernel's 3.9771, where they agree to
    1e-6 on VNNI CPUs. There every layer runs "exact", the same integer arithmetic in float32 (docs/methods.md
    §1.9). Layers on a GPU keep int8; a training run quantizes its model on the CPU before moving it, so its
    choice follows the host CPU (int8 on an H200 was slower than bf16 anyway, results/bench/gpu.md)."""
    if torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported():
        return None
    return ("quant.kernel=int8: this CPU has no VNNI (int8 dot products), where the int8 ResNet-20 step ran 8x FP32's "
            "and oneDNN's int8 convolution overflows; running quant.kernel=exact (the same integer arithmetic in float32)")


@dataclass(frozen=True)
class LayerOp:
    """What a quantized layer computes on its codes: a linear map or a 2-d convolution; `int8` selects int8 ops:
    a plain _int_mm GEMM for linear layers and 1x1 convolutions without padding, quant.direct_conv or quant.im2col
    for other convolutions (`im2col` is True for those, whichever lowering _direct picks); without
    `int8_backward` dL/dW runs the exact path's float32 op, and dL/dX too unless `int8_input_grad`; such a layer
    runs exact entirely where quant.direct_conv does not apply (quant.integer._lowering)."""

    conv: bool
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    int8: bool = False
    int8_backward: bool = True  # False: a convolution narrower than INT8_MIN_CONV_BACKWARD_CHANNELS
    int8_input_grad: bool = True  # without int8_backward: dL/dX int8 all the same (INT8_MIN_CONV_INPUT_GRAD_CHANNELS)

    @property
    def im2col(self) -> bool:
        return self.int8 and self.conv and (self.kernel_size != (1, 1) or self.padding != (0, 0))


def choose_kernel(layer: nn.Module, kernel: str) -> str:
    """"fake", "exact" or "int8" for one QConv2d / QLinear under the spec's `kernel` (the rule of §1.9).

    int8 where the op is a plain GEMM (linear, 1x1 conv without padding or groups) at least INT8_MIN_WIDTH wide in
    both its input and output features, or a convolution quant.im2col expresses (no groups, no dilation, padding
    < kernel size) with at least INT8_MIN_CONV_CHANNELS input and output channels; a conv this module cannot
    express exactly (padding given as a string, non-zero padding modes) keeps the fake path.
    """
    if kernel == "fake":
        return "fake"
    if kernel != "int8" or (layer.weight.device.type != "cuda" and int8_refusal()):  # type: ignore[union-attr]
        return "exact"
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            return "fake"
        width = min(layer.in_channels, layer.out_channels)
        if layer.kernel_size == (1, 1) and layer.padding == (0, 0):
            ok = layer.groups == 1 and width >= INT8_MIN_WIDTH
        else:
            ok = (layer.groups == 1 and layer.dilation == (1, 1) and width >= INT8_MIN_CONV_CHANNELS
                  and all(p < k for p, k in zip(layer.padding, layer.kernel_size)))
    else:
        ok = min(layer.in_features, layer.out_features) >= INT8_MIN_WIDTH
    return "int8" if ok else "exact"


def layer_op(layer: nn.Module, kernel: str) -> LayerOp:
    """The LayerOp of a QConv2d / QLinear whose choose_kernel is `kernel` ("exact" or "int8")."""
    if isinstance(layer, nn.Conv2d):
        width = min(layer.in_channels, layer.out_channels)
        narrow = layer.kernel_size != (1, 1) and width < INT8_MIN_CONV_BACKWARD_CHANNELS
        return LayerOp(conv=True, kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, groups=layer.groups, int8=kernel == "int8",
                       int8_backward=kernel == "int8" and not narrow,
                       int8_input_grad=kernel == "int8" and width >= INT8_MIN_CONV_INPUT_GRAD_CHANNELS)
    return LayerOp(conv=False, int8=kernel == "int8", int8_backward=kernel == "int8")


def kernel_choices(model: nn.Module) -> dict[str, str]:
    """{layer name: "fake" | "exact" | "int8" | "int8-fwd-dx" | "int8-forward"} for every quantized layer, for the
    run's summary.

    "int8-fwd-dx": a convolution whose forward and dL/dX run int8 (quant.direct_conv, where its batch x output
    pixels reach DIRECT_CONV_MIN_PIXELS on the CPU, exact otherwise) and whose dL/dW runs exact; "int8-forward":
    the same with the whole backward exact."""
    model = unwrap(model)
    return {name: _label(m) for name, m in model.named_modules() if hasattr(m, "kernel") and hasattr(m, "gq")}


def _label(layer: nn.Module) -> str:
    """A layer's entry in kernel_choices."""
    op = layer.op
    if op is None or not op.int8 or op.int8_backward:
        return layer.kernel
    return "int8-fwd-dx" if op.int8_input_grad else "int8-forward"
