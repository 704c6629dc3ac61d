"""Fixed-ratio gradient interval: c = gamma * max|g|, gamma constant (docs/methods.md §1.3; paper: 0.8 and 0.6)."""
from __future__ import annotations

from dataclasses import dataclass

from quant.grad.base import GradPolicy


@dataclass(frozen=True, kw_only=True)
class FixedPolicy(GradPolicy):
    """Constant clip ratio `gamma` in (0, 1] for every layer and step."""

    gamma: float = 0.8

    def __post_init__(self) -> None:
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0 < self.gamma <= 1:
            raise ValueError(f"quant.grad.gamma={self.gamma!r} is invalid: use a number in (0, 1]")

    def initial_gamma(self) -> float:
        return float(self.gamma)
