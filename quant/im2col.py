"""Convolutions on int8 codes as int8 x int8 -> int32 GEMMs (`torch._int_mm`), channels-last (docs/methods.md §1.9).

A kh x kw convolution of an (B, H, W, C) int8 tensor is one GEMM of its im2col matrix (B*Ho*Wo, kh*kw*C), one
int8 copy of a strided view of the padded tensor (no float round trip), with the (kh*kw*C, O) weight matrix in
the same (i, j, c) order. The three GEMMs of a training step:

    forward  y  = im2col(a_pad)         @ W^T        (N_out, kh*kw*C) x (kh*kw*C, O)
    dL/dX       = im2col(dilate_pad(g)) @ flip(W)    (N_in,  kh*kw*O) x (kh*kw*O, C): the transposed conv
    dL/dW       = g^T @ im2col(a_pad)                (O, N_out) x (N_out, kh*kw*C)

dL/dX as a transposed convolution keeps the big operand in int8; the alternative, col2im of the int32 product
g @ W (N_out, kh*kw*C) summed over shifted views, writes 9x the input in int32 and measured 10-50x slower.
For stride s > 1 the gradient is dilated (s-1 zeros between pixels) first: (s^2 - 1)/s^2 of that GEMM's rows
multiply zeros, which costs less than a second code path (stride-2 layers are few).

Activations are stored shifted (int8 = code - zero, quant.codes.grid_codes); the caller pads with the code of
real zero (stored -zero), so every entry of im2col is `code - zero` and the zero point comes back as the same
rank-1 correction as for a plain GEMM: sum(code * w) = sum(stored * w) + zero * sum(w).

Linear layers and 1x1 convolutions need no im2col: `gemm_rows` / `from_gemm_rows` turn their operands into GEMM
rows and back, and `scatter_strided` places a strided 1x1 conv's input gradient.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

INT32_SAFE_K = (2**31 // (255 * 127)) // 8 * 8  # longest reduction whose exact int32 sum cannot overflow, a multiple of 8


def int_mm(a: Tensor, b: Tensor, pad: bool | None = None) -> Tensor:
    """torch._int_mm, with CUDA's shape rules (more than 16 rows, K and N multiples of 8) met by zero padding
    (`pad`, default: on CUDA): zero codes add nothing to an integer sum, so the result is the same."""
    if not (a.is_cuda if pad is None else pad):
        return torch._int_mm(a, b)
    (m, k), n = a.shape, b.shape[1]
    pad_m, pad_k, pad_n = (24 - m if m <= 16 else 0), -k % 8, -n % 8
    if not (pad_m or pad_k or pad_n):
        return torch._int_mm(a, b)
    a = torch.nn.functional.pad(a, (0, pad_k, 0, pad_m))
    b = torch.nn.functional.pad(b, (0, pad_n, 0, pad_k))
    return torch._int_mm(a, b)[:m, :n]


def int_matmul(a: Tensor, b: Tensor) -> Tensor:
    """(M, K) int8 @ (K, N) int8, exact: int32 for K <= INT32_SAFE_K, else int64 from int32 chunks."""
    k = a.shape[1]
    if k <= INT32_SAFE_K:
        return int_mm(a, b)
    return sum(int_mm(a[:, i:i + INT32_SAFE_K], b[i:i + INT32_SAFE_K]).long() for i in range(0, k, INT32_SAFE_K))


def span(name: str):
    """A profiler range in eager mode (scripts/bench_step.py --split), nothing inside torch.compile."""
    return nullcontext() if torch.compiler.is_compiling() else torch.profiler.record_function(name)


@torch.library.custom_op("quant::im2col", mutates_args=())
def _im2col(t: Tensor, kernel: list[int], stride: list[int], out_hw: list[int]) -> Tensor:
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    out = t.new_empty(t.shape[0] * ho * wo, kh * kw * t.shape[3])
    t = t[:, :(ho - 1) * sh + kh, :(wo - 1) * sw + kw]  # the rows and columns some output uses
    view = t.unfold(1, kh, sh).unfold(2, kw, sw).permute(0, 1, 2, 4, 5, 3)  # (B, Ho, Wo, kh, kw, C)
    out.view(view.shape).copy_(view)
    return out


@_im2col.register_fake
def _(t: Tensor, kernel: list[int], stride: list[int], out_hw: list[int]) -> Tensor:
    return t.new_empty(t.shape[0] * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * t.shape[3])


def im2col(t: Tensor, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]) -> Tensor:
    """(B, Hp, Wp, C) padded -> (B*Ho*Wo, kh*kw*C): row (b, y, x) holds t[b, y*s+i, x*s+j, c] in (i, j, c) order.

    One copy of a (B, Ho, Wo, kh, kw, C) strided view of t: 2-3x faster than torch.cat of the kh*kw shifted
    views (or writing them into a preallocated buffer), whose copies are C bytes wide. A custom op, so that
    Inductor keeps it as one call on a materialized input: inlined, it recomputed the gradient's quantization
    (hash noise included) for each of the kh*kw taps and made the compiled backward 10x slower than eager.
    """
    with span("int8.im2col"):
        return _im2col(t, list(kernel), list(stride), list(out_hw))


def weight_rows(w8: Tensor) -> Tensor:
    """(O, C, kh, kw) -> (O, kh*kw*C), im2col's column order."""
    return w8.permute(0, 2, 3, 1).reshape(w8.shape[0], -1)


def conv_forward(a_pad: Tensor, w8: Tensor, stride: tuple[int, int], zero: Tensor) -> Tensor:
    """sum(code_a * code_w) as int32 (B, Ho, Wo, O): a_pad (B, Hp, Wp, C) padded int8 `code - zero`."""
    b, hp, wp, _ = a_pad.shape
    kh, kw = w8.shape[2:]
    ho, wo = (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
    w_rows = weight_rows(w8)
    acc = int_matmul(im2col(a_pad, (kh, kw), stride, (ho, wo)), w_rows.t())
    acc = acc + zero.to(acc.dtype) * w_rows.sum(1, dtype=acc.dtype)
    return acc.reshape(b, ho, wo, -1)


def conv_weight_grad(a_pad: Tensor, g8: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                     zero: Tensor) -> Tensor:
    """sum(code_a * code_g) per weight as int32/int64 (O, C, kh, kw): g8 (B, Ho, Wo, O) gradient codes."""
    o = g8.shape[-1]
    g_rows = g8.reshape(-1, o)
    cols = im2col(a_pad, kernel, stride, g8.shape[1:3])  # recomputed: cheaper than saving 9x the input
    acc = int_matmul(g_rows.t(), cols)
    acc = acc + zero.to(acc.dtype) * g_rows.sum(0, dtype=acc.dtype)[:, None]
    return acc.reshape(o, kernel[0], kernel[1], -1).permute(0, 3, 1, 2)


def conv_input_grad(g8: Tensor, w8: Tensor, stride: tuple[int, int], padding: tuple[int, int],
                    in_hw: tuple[int, int]) -> Tensor:
    """sum(code_g * code_w) per input pixel as int32 (B, H, W, C): the transposed convolution of the gradient
    codes g8 (B, Ho, Wo, O), dilated by the stride and padded so that a stride-1 conv with the flipped kernel
    returns H x W (needs padding <= kernel - 1)."""
    b, ho, wo, o = g8.shape
    kh, kw = w8.shape[2:]
    (sh, sw), (ph, pw), (h, w) = stride, padding, in_hw
    top, left = kh - 1 - ph, kw - 1 - pw
    buf = g8.new_zeros(b, h + kh - 1, w + kw - 1, o)
    buf[:, top:top + (ho - 1) * sh + 1:sh, left:left + (wo - 1) * sw + 1:sw] = g8
    w_flip = w8.flip(2, 3).permute(2, 3, 0, 1).reshape(kh * kw * o, -1)  # (kh*kw*O, C), im2col's order
    return int_matmul(im2col(buf, (kh, kw), (1, 1), (h, w)), w_flip).reshape(b, h, w, -1)


def gemm_rows(t: Tensor, conv: bool, stride: tuple[int, int]) -> Tensor:
    """A GEMM operand: (..., F) -> (N, F); for a 1x1 conv (B, C, H, W) -> (B*H'*W', C), channels-last order."""
    if conv:
        t = t[:, :, ::stride[0], ::stride[1]].permute(0, 2, 3, 1)  # (B, H', W', C)
    return t.reshape(-1, t.shape[-1])


def from_gemm_rows(rows: Tensor, like: Tensor, conv: bool, stride: tuple[int, int]) -> Tensor:
    """(N, F) -> `like`'s layout with F features: (..., F), or (B, F, H', W') in channels-last memory for a 1x1
    conv whose input is `like` (B, C, H, W) (H' = ceil(H / stride), the output size of a 1x1 conv)."""
    if not conv:
        return rows.reshape(*like.shape[:-1], rows.shape[-1])
    b, _, h, w = like.shape
    return rows.reshape(b, -(-h // stride[0]), -(-w // stride[1]), rows.shape[-1]).permute(0, 3, 1, 2)


def scatter_strided(part: Tensor, like: Tensor, stride: tuple[int, int]) -> Tensor:
    """The input gradient of a strided 1x1 conv: `part` at every stride-th pixel, zero elsewhere."""
    if stride == (1, 1):
        return part
    full = part.new_zeros(like.shape).contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
    full[:, :, ::stride[0], ::stride[1]] = part
    return full
