"""The registered quantizer families (quant.family) and which one a QuantSpec asks for."""
from __future__ import annotations

from quant.apt_family import AptFamily
from quant.family import QuantizerFamily
from quant.interval_family import IntervalFamily
from quant.spec import QuantSpec

INTERVAL, APT = IntervalFamily(), AptFamily()
FAMILIES: tuple[QuantizerFamily, ...] = (INTERVAL, APT)  # the order of their rows in the packed all-reduce


def family_of(spec: QuantSpec) -> QuantizerFamily:
    """APT when the spec carries a precision policy (quant=apt), else the fixed-point interval quantizers."""
    return APT if spec.precision is not None else INTERVAL
