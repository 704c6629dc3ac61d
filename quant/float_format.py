"""Low-bit floating-point formats simulated exactly in float32 (docs/methods.md §1.10): FP8 E5M2 and E4M3.

A value of a format with `e` exponent and `m` mantissa bits and bias `B` is `(1 + f / 2^m) 2^E` (normal,
E >= 1 - B) or `(f / 2^m) 2^(1 - B)` (subnormal), `f` an m-bit integer. Between two powers of two the values are a
uniform grid of step `2^(E - m)`, and below the smallest normal the subnormals continue the smallest binade's step.
So rounding is integer rounding on that grid: with `E = max(floor(log2 |x|), 1 - B)` (from torch.frexp, exact),
`q = round(|x| / 2^(E - m)) 2^(E - m)`, all products exact in float32 (powers of two). Round-half-to-even on the
grid index is the IEEE rounding of the format (an even index is an even mantissa), and a value that rounds up to
`2^(E + 1)` is that power of two, also in the format. Stochastic rounding is `floor(t + u)` on the same index.

Beyond the largest finite value the result saturates at it (a scaled gradient never gets there: its scale maps
the clip to that value); torch's float8 casts instead give inf (E5M2) or NaN (E4M3FN) from half a step above it.
E4M3 here is the OCP/NVIDIA "FN" variant (no infinities, largest 448), as torch.float8_e4m3fn.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from quant.primitives import round_nearest, round_stochastic


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: mantissa bits, the smallest normal exponent, the largest finite value, and
    how values are rounded into it (nearest-even, or stochastic: `quant.grad_rounding`)."""

    name: str
    mantissa_bits: int
    min_exponent: int  # 1 - bias: exponent of the smallest normal value
    max_value: float
    stochastic: bool = False

    def quantize(self, x: Tensor, *, stochastic: bool | None = None) -> Tensor:
        """`x` rounded to the format, saturating at +-max_value; float32 in and out; `stochastic` overrides."""
        stochastic = self.stochastic if stochastic is None else stochastic
        magnitude = x.abs()
        _, exponent = torch.frexp(magnitude)  # magnitude = mant * 2^exponent, mant in [0.5, 1): floor(log2) = exponent - 1
        exponent = (exponent - 1).clamp_min(self.min_exponent)
        step = torch.ldexp(torch.ones_like(magnitude), exponent - self.mantissa_bits)
        t = magnitude / step  # exact: a division by a power of two
        k = round_stochastic(t) if stochastic else round_nearest(t)
        return torch.copysign((k * step).clamp_max(self.max_value), x)


# Wang et al. 2018 (arXiv 1812.08011) and HFP8's backward (Sun et al. 2019): 5 exponent bits, bias 15.
FP8_E5M2 = FloatFormat("fp8_e5m2", mantissa_bits=2, min_exponent=-14, max_value=57344.0)
# HFP8's forward format (Sun et al. 2019) as OCP FP8 E4M3FN: bias 7, the all-ones exponent kept for numbers.
FP8_E4M3 = FloatFormat("fp8_e4m3", mantissa_bits=3, min_exponent=-6, max_value=448.0)

FORMATS = {f.name: f for f in (FP8_E5M2, FP8_E4M3)}
GRAD_FORMATS = ("int", *FORMATS)
