"""QuantSpec: the validated description of what to quantize, built once from the config by train.py."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from quant.apt import AptPolicy
from quant.float_format import FORMATS, GRAD_FORMATS, FloatFormat
from quant.grad.base import GradPolicy
from quant.grad.minmax import MinMaxPolicy
from quant.primitives import WEIGHT_GRIDS

MIN_BITS, MAX_BITS = 2, 16
KERNELS = ("fake", "exact", "int8")
GRAD_ROUNDINGS = ("nearest", "stochastic")
INT8_MAX_BITS = 8


def _check_bits(role: str, bits) -> int | None:
    """None or 32 mean full precision (returned as None); otherwise an int in 2..16."""
    if bits is None or (type(bits) is int and bits == 32):
        return None
    if type(bits) is not int or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"quant.bits.{role}={bits!r} is invalid: use an integer in {MIN_BITS}..{MAX_BITS}, "
                         f"or 32/null for full precision")
    return bits


@dataclass(frozen=True, kw_only=True)
class QuantSpec:
    """Bit-widths per role (W: weights, A: layer inputs, G: output gradients) and how to pick gradient intervals.

    keep_first_last: the first nn.Conv2d and the last nn.Linear (in named_modules order) stay full precision
    (docs/methods.md §1.1). keep_fp: fnmatch patterns of module names that stay full precision, e.g. ("head.*",).
    large_fraction: the fraction of largest |g| that counts as "large gradients" G_L in the E(G_L) statistic
    (docs/methods.md §1.5: 1e-3).
    precision: an APT controller (docs/methods.md §4): every quantized role gets the power-of-two fixed-point
    format of quant.apt_layers instead of the learnable-interval quantizers, starting at its bits (which must be
    one of `precision.candidates`); `grad` is then unused.
    kernel: how a quantized layer computes (docs/methods.md §1.9): "fake" multiplies the dequantized values
    (today's numerics); "exact" runs the op on the integer codes in float32 and applies the scales after it, so
    every operand is on its grid in every precision mode; "int8" also runs linear and 1x1-conv GEMMs as
    int8 x int8 -> int32 (`torch._int_mm`) where quant.kernel_rule says it pays. exact/int8 need W, A and G
    all quantized; int8 needs them <= 8 bits.
    weight_grid: "symmetric" (LBT's, 2^b - 1 weight values: W2 is ternary) or "signed" (LSQ's and the TRS paper's
    Eq. 13, 2^b values in [-2^(b-1), 2^(b-1) - 1] steps), quant.primitives.weight_levels; every kernel and APT
    honour it.
    grad_format: "int" (the fixed-point grid of §1.2) or a float format that replaces it for the output gradients
    ("fp8_e5m2", "fp8_e4m3"; quant.float_format, docs/methods.md §1.10): the policy's clip is scaled onto the
    format's largest value, and G must be 8 bits. grad_rounding: how a float format rounds ("nearest" even, or
    "stochastic"); the integer grid always rounds stochastically.
    fused: eager quantizers as compiled elementwise regions (quant.fused); False runs the reference functions.
    """

    w_bits: int | None = None
    a_bits: int | None = None
    g_bits: int | None = None
    grad: GradPolicy = field(default_factory=MinMaxPolicy)
    keep_first_last: bool = True
    keep_fp: tuple[str, ...] = ()
    large_fraction: float = 1e-3
    precision: AptPolicy | None = None
    kernel: str = "fake"
    weight_grid: str = "symmetric"
    grad_format: str = "int"
    grad_rounding: str = "nearest"
    fused: bool = True

    def __post_init__(self) -> None:
        for role in ("w", "a", "g"):
            object.__setattr__(self, f"{role}_bits", _check_bits(role, getattr(self, f"{role}_bits")))
        if not isinstance(self.grad, GradPolicy):
            raise ValueError(f"quant.grad={self.grad!r} is invalid: use a policy from configs/quant/grad "
                             f"(a quant.grad.*Policy)")
        if not isinstance(self.keep_first_last, bool):
            raise ValueError(f"quant.keep_first_last={self.keep_first_last!r} is invalid: use true or false")
        if not isinstance(self.keep_fp, tuple) or not all(isinstance(p, str) for p in self.keep_fp):
            raise ValueError(f"quant.keep_fp={self.keep_fp!r} is invalid: use a list of module-name patterns")
        if isinstance(self.large_fraction, bool) or not isinstance(self.large_fraction, (int, float)) \
                or not 0 < self.large_fraction < 1:
            raise ValueError(f"quant.large_fraction={self.large_fraction!r} is invalid: use a number in (0, 1)")
        if self.precision is not None:
            if not isinstance(self.precision, AptPolicy):
                raise ValueError(f"quant.precision={self.precision!r} is invalid: use quant=apt (a quant.apt.AptPolicy)")
            for role in ("w", "a", "g"):
                bits = getattr(self, f"{role}_bits")
                if bits is not None and bits not in self.precision.candidates:
                    raise ValueError(f"quant.bits.{role}={bits} is invalid under APT: start at one of "
                                     f"quant.precision.candidates={list(self.precision.candidates)}")
        if self.kernel not in KERNELS:
            raise ValueError(f"quant.kernel={self.kernel!r} is invalid: use one of {', '.join(KERNELS)}")
        if self.kernel != "fake":
            for role in ("w", "a", "g"):
                bits = getattr(self, f"{role}_bits")
                if bits is None:
                    raise ValueError(f"quant.kernel={self.kernel} needs W, A and G quantized, got quant.bits.{role}=32:"
                                     f" quantize every role or use quant.kernel=fake")
                if self.kernel == "int8" and bits > INT8_MAX_BITS:
                    raise ValueError(f"quant.kernel=int8 needs W/A/G <= {INT8_MAX_BITS} bits, got quant.bits.{role}="
                                     f"{bits}: lower it or use quant.kernel=exact")
        if self.weight_grid not in WEIGHT_GRIDS:
            raise ValueError(f"quant.weight_grid={self.weight_grid!r} is invalid: use one of {', '.join(WEIGHT_GRIDS)}")
        self._check_grad_format()
        if not isinstance(self.fused, bool):
            raise ValueError(f"quant.fused={self.fused!r} is invalid: use true (fused eager quantizers, quant/fused.py) "
                             f"or false (the reference functions)")
        if self.kernel != "fake" and not self.grad.per_tensor:
            raise ValueError(f"quant.kernel={self.kernel} needs one gradient scale per tensor; {type(self.grad).__name__} "
                             f"scales each sample's row: use quant.kernel=fake")
        if self.precision is not None and self.kernel != "fake":
            raise ValueError(f"quant.kernel={self.kernel} applies to the learnable-interval quantizers; APT "
                             f"(quant=apt) computes with quant.kernel=fake")

    def _check_grad_format(self) -> None:
        if self.grad_format not in GRAD_FORMATS:
            raise ValueError(f"quant.grad_format={self.grad_format!r} is invalid: use one of {', '.join(GRAD_FORMATS)}")
        if self.grad_rounding not in GRAD_ROUNDINGS:
            raise ValueError(f"quant.grad_rounding={self.grad_rounding!r} is invalid: use one of "
                             f"{', '.join(GRAD_ROUNDINGS)}")
        if self.grad_format == "int":
            return
        if self.g_bits not in (None, 8):
            raise ValueError(f"quant.bits.g={self.g_bits} is invalid with quant.grad_format={self.grad_format}: "
                             f"an 8-bit float format needs quant.bits.g=8")
        if self.kernel != "fake" or self.precision is not None:
            raise ValueError(f"quant.grad_format={self.grad_format} computes with quant.kernel=fake and without APT: "
                             f"use quant.kernel=fake, or quant.grad_format=int")

    @property
    def grad_float_format(self) -> FloatFormat | None:
        """The output gradients' float format with its rounding, or None for the integer grid."""
        if self.grad_format == "int":
            return None
        return replace(FORMATS[self.grad_format], stochastic=self.grad_rounding == "stochastic")

    @property
    def is_full_precision(self) -> bool:
        """True when no role is quantized (then nothing needs swapping)."""
        return self.w_bits is None and self.a_bits is None and self.g_bits is None
