"""Pure uniform-grid quantization functions: no state, no autograd, no modules (STYLE.md point 5, layer 1).

A uniform grid is `lo + k * step` for integer `k` in `[0, levels]` (so `levels + 1` values). Two grids are used
by the LBT paper (Kim et al., ECCV 2024, docs/methods.md §1.2 and §1.4):

- symmetric, `2^b - 1` values in `[-c, c]`, step `D = 2c / (2^b - 2)`; zero is a value (`k = levels / 2`).
  Weights, signed activations and gradients use it.
- unsigned, `2^b` values in `[0, u]`, step `u / (2^b - 1)`. Activations after a ReLU use it.

Weights take one of two grids (`quant.weight_grid`, docs/methods.md §1.4), both `-s + k * s / zero`:
- "symmetric" (LBT's), `2^b - 1` values in `[-s, s]`: zero = 2^(b-1) - 1, so W2 is ternary {-s, 0, s};
- "signed" (LSQ's, TRS paper Eq. 13), `2^b` values in `[-s, s - s / 2^(b-1)]`: zero = 2^(b-1), so W2 has the 4
  values {-2, -1, 0, 1} * s / 2.

Rounding is to nearest (forward quantizers) or stochastic, `floor(t + noise)` with `noise ~ U[0, 1)`
(gradients, docs/methods.md §1.2), which is unbiased inside the range: E[floor(t + U)] = t.
Values beyond the range saturate (clamp after rounding is the same as clamp before, and cheaper).
`lo`, `step` and the clip values may be Python numbers or 0-dim tensors (learnable intervals, per-step g_max).
"""
from __future__ import annotations

import torch
from torch import Tensor

Scalar = Tensor | float


def symmetric_levels(bits: int) -> int:
    """Number of steps of the symmetric grid: 2^b - 2 (so 2^b - 1 values, zero included)."""
    return 2**bits - 2


WEIGHT_GRIDS = ("symmetric", "signed")


def weight_levels(bits: int, grid: str) -> tuple[int, int]:
    """(levels, zero) of a weight grid: its number of steps and the index of real zero; the step is s / zero."""
    half = 2 ** (bits - 1)
    if grid == "symmetric":
        return 2 * half - 2, half - 1
    if grid == "signed":
        return 2 * half - 1, half
    raise ValueError(f"quant.weight_grid={grid!r} is invalid: use one of {', '.join(WEIGHT_GRIDS)}")


def unsigned_levels(bits: int) -> int:
    """Number of steps of the unsigned grid: 2^b - 1 (so 2^b values in [0, u])."""
    return 2**bits - 1


def round_nearest(t: Tensor) -> Tensor:
    """Round half to even (torch.round); the forward quantizers' rounding."""
    return torch.round(t)


def hashed_uniform_like(t: Tensor, seed: Tensor) -> Tensor:
    """U[0, 1) noise shaped like `t`: a 32-bit integer hash (lowbias32 family, C. Wellons' hash-prospector
    constants 0x21f0aaad, 0x735a2d97) of `index * 0x9E3779B9 + seed`, 24-bit resolution.

    int64 arithmetic masked to 32 bits: every product stays below 2^63, so no signed overflow, which Inductor's
    C++ would treat as undefined behaviour (an int32 version of this hash miscompiled into a runaway loop).
    Used under torch.compile, where Inductor's CPU `rand` runs Philox one element at a time (about 3x slower
    than this vectorised hash on a 2M-element gradient); eager and compiled results are identical.
    """
    mask = 0xFFFFFFFF
    golden = 0x9E3779B9 - 2**32  # the same low 32 bits as a signed int32: Triton refuses 0x9E3779B9 beside int32 indices
    x = (torch.arange(t.numel(), device=t.device, dtype=torch.int64).view(t.shape) * golden + seed) & mask
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & mask
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & mask
    x = x ^ (x >> 15)
    return (x >> 8).to(t.dtype) * (1.0 / 2**24)


def uniform_like(t: Tensor) -> Tensor:
    """U[0, 1) noise shaped like `t`: torch.rand_like, except a hash under torch.compile on the CPU (Inductor's CUDA
    `rand` is Philox, vectorised already)."""
    if torch.compiler.is_compiling() and t.device.type == "cpu" and t.numel() < 2**31:
        return hashed_uniform_like(t, torch.randint(0, 2**31, (), device=t.device))
    return torch.rand_like(t)


def round_stochastic(t: Tensor, noise: Tensor | None = None) -> Tensor:
    """floor(t + u), u ~ U[0, 1): rounds up with probability frac(t), so E[round_stochastic(t)] = t."""
    return torch.floor(t + (uniform_like(t) if noise is None else noise))


def grid_index(x: Tensor, lo: Scalar, step: Scalar, levels: Scalar, *, stochastic: bool = False,
               noise: Tensor | None = None) -> Tensor:
    """Integer position `k` in `[0, levels]` (as a float tensor) of the grid value `lo + k*step` x rounds to.

    The quantized layer's integer code: the exact and int8 kernels compute with it (quant.integer), transition-rate
    scheduling counts its changes (docs/methods.md §3.1); `levels` may be a 0-dim tensor.
    """
    t = (x - lo) / step
    k = round_stochastic(t, noise) if stochastic else round_nearest(t)
    lowest = torch.zeros_like(levels) if isinstance(levels, Tensor) else 0  # clamp takes two numbers or two tensors
    return k.clamp_(lowest, levels)


def quantize_to_grid(x: Tensor, lo: Scalar, step: Scalar, levels: Scalar, *, stochastic: bool = False,
                     noise: Tensor | None = None) -> Tensor:
    """Grid value `lo + k*step` nearest to x (or stochastically rounded), `k` in `[0, levels]`; saturates.

    `levels` may be a 0-dim tensor, so one traced graph serves a grid whose kind is decided on device.
    """
    return grid_index(x, lo, step, levels, stochastic=stochastic, noise=noise) * step + lo


def quantize_symmetric(x: Tensor, clip: Scalar, bits: int, *, stochastic: bool = False,
                       noise: Tensor | None = None) -> Tensor:
    """Symmetric grid with 2^b - 1 values in [-clip, clip] (docs/methods.md §1.2: D = 2c / (2^b - 2))."""
    levels = symmetric_levels(bits)
    return quantize_to_grid(x, -clip, 2 * clip / levels, levels, stochastic=stochastic, noise=noise)


def quantize_unsigned(x: Tensor, upper: Scalar, bits: int, *, stochastic: bool = False,
                      noise: Tensor | None = None) -> Tensor:
    """Unsigned grid with 2^b values in [0, upper] (docs/methods.md §1.4, activations after ReLU)."""
    levels = unsigned_levels(bits)
    return quantize_to_grid(x, 0.0, upper / levels, levels, stochastic=stochastic, noise=noise)


def expected_squared_error(x: Tensor, clip: Tensor, bits: int) -> Tensor:
    """Expected squared error of stochastic rounding on the symmetric grid, element-wise (docs/methods.md §1.3, MSE).

    In range, with `f` the fractional position between two grid values, stochastic rounding errs by `(1-f)D`
    with probability `f` and by `-fD` otherwise: E[err^2] = f(1-f)D^2. A clipped element errs by (|x| - c)^2.
    `clip` broadcasts against `x`, so a column of candidate clips (K, 1) against a row of values (1, N)
    scores every candidate in one vectorised pass: result (K, N).
    """
    step = 2 * clip / symmetric_levels(bits)
    t = (x + clip) / step
    f = t - torch.floor(t)
    over = x.abs() - clip
    return torch.where(over > 0, over.square(), f * (1 - f) * step.square())
