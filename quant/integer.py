"""Exact and int8 kernels: a quantized layer's op runs on the integer codes, the scales come after it.

docs/methods.md §1.9. The fake-quant path (quant.forward, quant.gradient) multiplies dequantized values
`x_hat = k*step + lo`; under bf16 autocast those are rounded off their grid before the op. Here the op sees the
codes themselves and the scales are applied to its float32 result:

    y     = (codes_a  (*) codes_w) * s_a * s_w        + bias
    dL/dX = (codes_g  (*) codes_w) * s_g * s_w        (the op's input gradient, then the straight-through mask)
    dL/dW = (codes_a  (*) codes_g) * s_a * s_g        (the op's weight gradient, then the straight-through mask)

with s the grid steps. Codes, the step of each grid (docs/methods.md §1.2, §1.4):
- weights: codes k - zero on their grid (quant.primitives.weight_levels), value = code * s_W / zero: symmetric,
  codes in [-(2^(b-1)-1), 2^(b-1)-1], or signed, codes in [-2^(b-1), 2^(b-1)-1] (both fit int8 up to 8 bits);
- activations: unsigned, codes in [0, 2^b-1], or symmetric as the weights (the `signed` buffer, on device);
- gradients: symmetric, codes q - (2^(b-1)-1) with q the index of quant.primitives.quantize_symmetric's grid.
Integers up to 2^8 are exact in bf16 and up to 2^24 in float32, so the op always runs in float32 on the codes
(autocast off inside): its result equals the fp32 path up to accumulation order in every precision mode.

kernel "int8" (W/A/G <= 8 bits): the ops run on int8 codes with int32 sums: linear layers and 1x1 convolutions
as plain `torch._int_mm` GEMMs in channels-last order; other convolutions on CPU with enough output pixels
(kernel_rule.DIRECT_CONV_MIN_PIXELS) as oneDNN's direct int8 convolution for the forward and dL/dX (quant.direct_conv) and an
im2col GEMM for dL/dW, the rest entirely through quant.im2col (im2col of the padded int8 codes; dL/dX as the transposed convolution). Activation
codes are stored shifted by -2^(b-1) so that 0..255 fits int8, padding included; the shift comes back as an exact
rank-1 integer correction (zero-point trick). Overflow: every sum is an exact integer of at most K * 255 * 127 in
magnitude, below 2^31 for K <= INT32_SAFE_K (66,311); longer reductions are split into chunks and summed in int64.
Layers where int8 does not pay (narrow GEMMs, narrow convolutions) or that im2col does not express (groups,
dilation) run "exact"; convolutions from INT8_MIN_CONV_CHANNELS but narrower than INT8_MIN_CONV_BACKWARD_CHANNELS
run "int8-fwd-dx": the forward and dL/dX through quant.direct_conv, dL/dW as the exact path's float32 op (or, below
INT8_MIN_CONV_INPUT_GRAD_CHANNELS, "int8-forward": the whole backward exact). Which layer runs which kernel is the
rule in quant.kernel_rule (choose_kernel, layer_op, kernel_choices); this module computes it.

The straight-through and learnable-interval gradients are those of quant.forward._FakeQuantize, evaluated with
the same values (x_hat = code * step), and the output gradient is quantized by the layer's own GradQuantizer
state with the same function as the fake path (quant.gradient.quantize_output_gradient). The codes, and the
per-element passes over them that run fused in eager mode, are quant.codes'.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from quant.codes import (activation_codes, gradient_operands, input_gradients, interval_gradients, weight_codes,
                         zero_index)
from quant.direct_conv import GRAD_ZERO_POINT, direct_conv, direct_conv_input_grad
from quant.gradient import quantize_output_gradient, stash_grad_state
from quant.im2col import (INT32_SAFE_K, conv_forward, conv_input_grad, conv_weight_grad, from_gemm_rows,  # noqa: F401
                          gemm_rows, int_matmul, scatter_strided, span)
from quant import kernel_rule
from quant.kernel_rule import LayerOp

def _to_int8(codes: Tensor, shift: Tensor | float = 0.0) -> Tensor:
    return (codes - shift).to(torch.int8)


def _needs_nchw(x: Tensor, op: LayerOp) -> bool:
    """Whether an int8 convolution's channels-last result must be handed back NCHW: an NCHW model gets NCHW
    back, so that what follows (BatchNorm's reductions) sums in the same order as after an "exact" layer.
    Decided in forward: a stride query in a custom backward makes Dynamo retrace that backward on
    `grad.contiguous()`, an NCHW gradient that every op after it follows."""
    return op.int8 and op.conv and not x.is_contiguous(memory_format=torch.channels_last)


def _like(t: Tensor, nchw: bool) -> Tensor:
    """t, or t as an NCHW tensor (_needs_nchw)."""
    return t.contiguous() if nchw else t


def _direct(op: LayerOp, x: Tensor) -> bool:
    """Whether an int8 convolution of input x runs as quant.direct_conv (oneDNN: CPU only) rather than through
    quant.im2col (DIRECT_CONV_MIN_PIXELS); static under torch.compile, which specialises on shapes."""
    if not op.im2col or x.device.type != "cpu":
        return False
    out_hw = [(n + 2 * p - k) // s + 1 for n, p, k, s in zip(x.shape[2:], op.padding, op.kernel_size, op.stride)]
    return x.shape[0] * out_hw[0] * out_hw[1] >= kernel_rule.DIRECT_CONV_MIN_PIXELS


def _lowering(op: LayerOp, x: Tensor) -> tuple[LayerOp, bool, LayerOp]:
    """(forward op, whether it runs as quant.direct_conv, backward op) of a layer for input x: a convolution
    without int8_backward runs int8 only through quant.direct_conv, its forward and (int8_input_grad) dL/dX, its
    dL/dW exact (_direct_backward); exact entirely where quant.direct_conv does not apply."""
    direct = _direct(op, x)
    if op.int8_backward or not op.int8:  # all int8, or all exact
        return op, direct, op
    exact = replace(op, int8=False)
    if not direct:
        return exact, False, exact
    return op, True, (op if op.int8_input_grad else exact)  # int8 dL/dX through quant.direct_conv, dL/dW exact


def _direct_forward(op: LayerOp, a_index: Tensor, w8: Tensor, zero_idx: Tensor) -> Tensor:
    """codes_a (*) codes_w as float32 through quant.direct_conv: a_index (uint8) holds the activation's grid
    indices, code + zero_idx; oneDNN pads with index 0, so the op subtracts zero_idx x the sum of the weights
    each output pixel sees inside the image (nothing on an unsigned grid, where zero_idx is 0)."""
    return direct_conv(a_index, 0, w8, op.stride, op.padding, zero_idx)


def _activation_int8(op: LayerOp, a: Tensor, zero: Tensor) -> Tensor:
    """The int8 activation operand, `code - zero`: a's layout for a GEMM; for im2col (B, H+2p, W+2p, C)
    channels-last, padded with the code of real zero (0) before the shift, in one elementwise pass."""
    if op.im2col:
        (ph, pw) = op.padding
        return _to_int8(F.pad(a.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph)), zero)
    return _to_int8(a, zero)


def _activation_codes(op: LayerOp, a8: Tensor, zero: Tensor, like: Tensor) -> Tensor:
    """_activation_int8's inverse: float codes in `like`'s shape."""
    if op.im2col:
        (ph, pw), (h, w) = op.padding, like.shape[2:]
        a8 = a8[:, ph:ph + h, pw:pw + w].permute(0, 3, 1, 2)
    return a8.float() + zero


def _forward_op(op: LayerOp, a: Tensor, w: Tensor, a8: Tensor | None, w8: Tensor | None, zero: Tensor) -> Tensor:
    """codes_a (*) codes_w as float32 integers: int8 GEMM, or the float op on float codes."""
    if op.im2col:  # a8 (B, Hp, Wp, C) padded; result (B, O, Ho, Wo) in channels-last memory
        return conv_forward(a8, w8, op.stride, zero).float().permute(0, 3, 1, 2)
    if op.int8:
        a_rows = gemm_rows(a8, op.conv, op.stride)  # (N, K) int8, shifted by -zero
        w_rows = w8.reshape(w8.shape[0], -1)  # (O, K)
        acc = int_matmul(a_rows, w_rows.t()) + zero.to(torch.int32) * w_rows.sum(1, dtype=torch.int32)  # (N, O)
        return from_gemm_rows(acc.float(), a, op.conv, op.stride)
    if op.conv:
        return F.conv2d(a, w, None, op.stride, op.padding, op.dilation, op.groups)
    return F.linear(a, w)


def _float_conv_backward(op: LayerOp, g: Tensor, a: Tensor, w: Tensor, *,
                         input_grad: bool) -> tuple[Tensor | None, Tensor]:
    """(dL/dX or None, dL/dW) of the convolution on float codes: the exact path's op."""
    grad_a, grad_w, _ = torch.ops.aten.convolution_backward(
        g, a, w, None, op.stride, op.padding, op.dilation, False, [0, 0], op.groups, [input_grad, True, False])
    return grad_a, grad_w


def _backward_op(op: LayerOp, g: Tensor, a: Tensor, w: Tensor, a8: Tensor | None, w8: Tensor | None,
                 zero: Tensor) -> tuple[Tensor, Tensor]:
    """(codes_g (*) codes_w, codes_a (*) codes_g): the op's input and weight gradients on codes, float32."""
    if op.im2col:
        g8 = _to_int8(g.permute(0, 2, 3, 1))  # (B, Ho, Wo, O)
        grad_a = conv_input_grad(g8, w8, op.stride, op.padding, a.shape[2:]).float().permute(0, 3, 1, 2)
        return grad_a, conv_weight_grad(a8, g8, op.kernel_size, op.stride, zero).float()
    if op.int8:
        g8 = _to_int8(g)
        g_rows = gemm_rows(g8, op.conv, (1, 1))  # (N, O): the output has the subsampled shape already
        a_rows = gemm_rows(a8, op.conv, op.stride)  # (N, K)
        w_rows = w8.reshape(w8.shape[0], -1)  # (O, K)
        grad_a = int_matmul(g_rows, w_rows).float()  # (N, K)
        grad_w = int_matmul(g_rows.t(), a_rows) + zero.to(torch.int32) * g_rows.sum(0, dtype=torch.int32)[:, None]
        grad_a = from_gemm_rows(grad_a, a, op.conv, op.stride)
        if op.conv:
            grad_a = scatter_strided(grad_a, a, op.stride)
        return grad_a, grad_w.float().reshape(w.shape)
    if op.conv:
        return _float_conv_backward(op, g, a, w, input_grad=True)
    g_rows, a_rows = g.reshape(-1, g.shape[-1]), a.reshape(-1, a.shape[-1])
    return g @ w, g_rows.t() @ a_rows


def _direct_backward(op: LayerOp, g: Tensor, a: Tensor, w8: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
    """_backward_op of a layer whose forward ran quant.direct_conv: dL/dX as oneDNN's int8 convolution of the
    gradient codes, dL/dW as quant.im2col's GEMM, or for a narrow layer (not op.int8_backward) as the exact path's
    float32 op (a, g: float activation and gradient codes)."""
    g_u8, g8 = gradient_operands(g, GRAD_ZERO_POINT, op.int8_backward)
    grad_a = direct_conv_input_grad(g_u8.contiguous(memory_format=torch.channels_last), w8, op.stride, op.padding,
                                    a.shape[2:])
    if not op.int8_backward:  # a narrow layer: dL/dW on the float codes (kernel_rule.INT8_MIN_CONV_INPUT_GRAD_CHANNELS)
        return grad_a, _float_conv_backward(op, g, a, w8.float(), input_grad=False)[1]
    g8 = g8.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # (B, Ho, Wo, O)
    grad_w = conv_weight_grad(_activation_int8(op, a, zero), g8, op.kernel_size, op.stride, zero).float()
    return grad_a, grad_w


class _IntegerLayer(torch.autograd.Function):
    """y = op(Qa(x), Qw(w)) + b computed on codes; backward quantizes dL/dY (the layer's GradQuantizer state) and
    computes dL/dX, dL/dW, dL/db and the intervals' gradients on codes as well."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias: Tensor | None, a_upper: Tensor, a_signed: Tensor,
                w_scale: Tensor, op: LayerOp, a_bits: int, w_bits: int, w_grid: str, gamma: Tensor, skipped: Tensor,
                stats: Tensor, warmed: Tensor, pending: Tensor, g_bits: int, policy, recording: bool,
                warming_up: bool, deferred: bool, large_fraction: float, fmt) -> Tensor:
        stash_grad_state(ctx, gamma, skipped, stats, warmed, pending, g_bits, policy, recording, warming_up,
                         deferred, large_fraction, fmt)
        with torch.autocast(x.device.type, enabled=False):  # float32 on integer codes: exact in every mode
            with span("quant.quantize"):
                op, direct, backward_op = _lowering(op, x)
                # float codes: every op's operand but quant.direct_conv's, and saved for any backward but all-int8
                keep = not (direct and backward_op.int8 and backward_op.int8_backward)
                a, a8, step_a, zero = activation_codes(x, a_upper, a_signed, a_bits, codes=keep, index=direct)
                cw, step_w, w_top = weight_codes(w, w_scale, w_bits, w_grid)
                if direct:  # uint8 grid indices (B, C, H, W), channels-last
                    a8 = a8.contiguous(memory_format=torch.channels_last)
                elif op.int8:
                    a8 = _activation_int8(op, a, zero)
                w8 = _to_int8(cw) if op.int8 else None
            if direct:
                y = _direct_forward(op, a8, w8, zero_index(a_bits, zero)) * (step_a * step_w)
            else:
                y = _forward_op(op, a, cw, a8, w8, zero) * (step_a * step_w)
            if bias is not None:
                y = y + (bias.float().view(-1, 1, 1) if op.conv else bias.float())
            nchw = _needs_nchw(x, op)
            y = _like(y, nchw)
        # an int8 backward keeps only the int8 codes (a quarter of the float codes' memory)
        # (a narrow layer's float dL/dW takes the float codes: saved, not rebuilt from a8 in backward)
        ctx.save_for_backward(x, w, a_upper, a_signed, w_scale, w_top, step_a, step_w, zero,
                              *((a if not backward_op.int8_backward else a8, w8) if backward_op.int8 else (a, cw)))
        ctx.op, ctx.direct = backward_op, direct and backward_op.int8
        ctx.a_bits, ctx.has_bias, ctx.w_dtype = a_bits, bias is not None, w.dtype
        ctx.nchw = nchw  # decided here, not in backward (_needs_nchw)
        return y

    @staticmethod
    def backward(ctx, g_out: Tensor):
        x, w, a_upper, a_signed, w_scale, w_top, step_a, step_w, zero, a_saved, w_saved = ctx.saved_tensors
        op: LayerOp = ctx.op
        with torch.autocast(g_out.device.type, enabled=False):
            with span("quant.quantize"):
                g_hat, cg, step_g = quantize_output_gradient(ctx, g_out, codes=True)
            if ctx.direct:
                a = a_saved if a_saved.is_floating_point() else a_saved.float() - zero_index(ctx.a_bits, zero)
                grad_a, grad_w = _direct_backward(op, cg, a, w_saved, zero)
                cw = w_saved.float()
            else:
                if op.int8:
                    a8, w8 = a_saved, w_saved
                    a, cw = _activation_codes(op, a8, zero, x), w8.float()
                else:
                    a, cw, a8, w8 = a_saved, w_saved, None, None
                grad_a, grad_w = _backward_op(op, cg, a, cw, a8, w8, zero)
            grad_x, grad_upper = input_gradients(x, grad_a, a, step_g * step_w, step_a, -a_upper * a_signed, a_upper)
            grad_w, grad_scale = interval_gradients(grad_w * (step_a * step_g), w.float(), cw * step_w, -w_scale,
                                                    w_top, w_scale)
            grad_bias = None
            if ctx.has_bias:
                grad_bias = g_hat.sum((0, 2, 3)) if op.conv else g_hat.reshape(-1, g_hat.shape[-1]).sum(0)
        return (_like(grad_x.to(x.dtype), ctx.nchw), grad_w.to(ctx.w_dtype), grad_bias, grad_upper, None, grad_scale,
                *([None] * 16))


def integer_layer_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """A QConv2d / QLinear's forward on codes (its kernel is "exact" or "int8"): initialise the intervals on the
    first batch as the fake path does, then one _IntegerLayer."""
    wq, aq, gq = layer.wq, layer.aq, layer.gq
    if wq.needs_init:
        wq._initialize(layer.weight)
    if aq.needs_init:
        aq._initialize(x)
    return _IntegerLayer.apply(x, layer.weight, layer.bias, aq.upper.abs(), aq.signed, wq.scale.abs(), layer.op,
                               aq.bits, wq.bits, wq.grid, *gq.function_args())
