"""Convolutions on int8 codes as oneDNN's direct int8 convolution (docs/methods.md §1.9).

`torch.ops.onednn.qconv_pointwise` convolves uint8 activations (with a zero point) with int8 weights, accumulates
in int32 and writes float32: with every scale 1.0 the output is the integer sum itself, exact below 2^24 (the
float32 "exact" path has the same bound). No im2col: on this CPU its forward is 2.0-3.2x faster than the fp32
convolution at 16-128 channels, where im2col + `torch._int_mm` ranges from 3.3x slower (16 channels) to 2.3x faster
(128) (results/bench/int8_direct_conv.md).

oneDNN wants its weights "prepacked" (reordered into its blocked layout) on every call, since the weights change
every step; that reorder costs in proportion to the weight (2 ms at 256x256x3x3, 7.6 ms at 512x512x3x3), so a
layer with few output pixels per weight (ResNet-18's last stages) runs faster through quant.im2col:
quant.integer chooses by DIRECT_CONV_MIN_PIXELS.

The two convolutions of a training step that fit this op:

    forward  y     = conv(a, W)                                     a: activation grid indices, zero point 0
    dL/dX          = conv(dilate(g) padded by k-1-p, flip(W)^T)     g: gradient codes + 128, zero point 128

oneDNN pads with the zero point, that is with real zero, so padding needs no correction; the caller corrects
for activations whose real zero is not index 0 (signed grids). The weight gradient stays a GEMM (quant.im2col).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GRAD_ZERO_POINT = 128  # symmetric gradient codes in [-127, 127] are stored as uint8 code + 128


@torch.library.custom_op("quant::direct_conv", mutates_args=())
def _direct_conv(u8: Tensor, zero_point: int, w8: Tensor, stride: list[int], padding: list[int],
                 index_shift: Tensor | None) -> Tensor:
    ones, zeros = torch.ones(w8.shape[0]), torch.zeros(w8.shape[0], dtype=torch.int64)
    packed = torch.ops.onednn.qconv_prepack(w8, ones, 1.0, zero_point, stride, padding, [1, 1], 1, list(u8.shape))
    out = torch.ops.onednn.qconv_pointwise(u8, 1.0, zero_point, packed, ones, zeros, None, stride, padding, [1, 1],
                                           1, 1.0, 0, torch.float32, "none", [], "")
    out = out.contiguous(memory_format=torch.channels_last)
    if index_shift is not None and bool(index_shift != 0):  # a CPU scalar: no device sync
        inside = F.conv2d(u8.new_ones(1, *u8.shape[1:], dtype=torch.float32), w8.float(), None, stride, padding)
        out -= index_shift * inside  # exact: integers below 2^24 on both sides
    return out


@_direct_conv.register_fake
def _(u8: Tensor, zero_point: int, w8: Tensor, stride: list[int], padding: list[int],
      index_shift: Tensor | None) -> Tensor:
    (b, _, h, w), (o, _, kh, kw) = u8.shape, w8.shape
    ho, wo = (h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1
    return u8.new_empty(b, o, ho, wo, dtype=torch.float32).contiguous(memory_format=torch.channels_last)


def direct_conv(u8: Tensor, zero_point: int, w8: Tensor, stride: tuple[int, int],
                padding: tuple[int, int], index_shift: Tensor | None = None) -> Tensor:
    """sum((u8 - zero_point - index_shift) * w8) over each output pixel's window as float32 (B, O, Ho, Wo),
    channels-last memory: u8 (B, C, H, W) uint8 channels-last, w8 (O, C, kh, kw) int8; padding counts as
    u8 == zero_point, so index_shift (a 0-dim CPU tensor) is subtracted only inside the image: the sum of the
    weights each output pixel sees there, times index_shift, computed only where index_shift is not 0. Inside
    the op rather than after it: the compiled graph then sees one tensor, not a correction to recompute."""
    return _direct_conv(u8.contiguous(memory_format=torch.channels_last), zero_point, w8.contiguous(),
                        list(stride), list(padding), index_shift)


def direct_conv_input_grad(g_u8: Tensor, w8: Tensor, stride: tuple[int, int], padding: tuple[int, int],
                           in_hw: tuple[int, int]) -> Tensor:
    """sum(code_g * code_w) per input pixel as float32 (B, C, H, W): the transposed convolution of g_u8
    (B, O, Ho, Wo) = gradient codes + GRAD_ZERO_POINT, as a stride-1 convolution with the flipped kernel over
    the gradient dilated by the stride (needs padding <= kernel - 1)."""
    kh, kw = w8.shape[2:]
    (sh, sw), (ph, pw), (h, w) = stride, padding, in_hw
    w_flip = w8.flip(2, 3).transpose(0, 1)  # (C, O, kh, kw)
    if (sh, sw) == (1, 1):
        return direct_conv(g_u8, GRAD_ZERO_POINT, w_flip, (1, 1), (kh - 1 - ph, kw - 1 - pw))
    buf = _dilate(g_u8.contiguous(memory_format=torch.channels_last), [sh, sw], [h + kh - 1, w + kw - 1],
                  [kh - 1 - ph, kw - 1 - pw])
    return direct_conv(buf, GRAD_ZERO_POINT, w_flip, (1, 1), (0, 0))


@torch.library.custom_op("quant::dilate", mutates_args=())
def _dilate(g_u8: Tensor, stride: list[int], size: list[int], offset: list[int]) -> Tensor:
    """g_u8 (B, O, Ho, Wo) channels-last at every stride-th pixel of a (B, O, *size) channels-last canvas of real
    zero (GRAD_ZERO_POINT), from `offset`. A custom op: inlined, Inductor fused the strided scatter into the
    gradient quantizer's kernel, which made that kernel several times slower (ResNet-20's stride-2 layers)."""
    (b, o, ho, wo), (sh, sw), (top, left) = g_u8.shape, stride, offset
    buf = g_u8.new_full((b, size[0], size[1], o), GRAD_ZERO_POINT)
    buf[:, top:top + (ho - 1) * sh + 1:sh, left:left + (wo - 1) * sw + 1:sw] = g_u8.permute(0, 2, 3, 1)
    return buf.permute(0, 3, 1, 2)


@_dilate.register_fake
def _(g_u8: Tensor, stride: list[int], size: list[int], offset: list[int]) -> Tensor:
    return g_u8.new_empty(g_u8.shape[0], size[0], size[1], g_u8.shape[1]).permute(0, 3, 1, 2)
