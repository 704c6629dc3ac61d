"""Large-gradient-optimal interval, LBT (Kim et al., ECCV 2024, Sec. 4; docs/methods.md §1.3).

The error bound on the large gradients (top `alpha` fraction of |g|) is minimised when the clipped fraction among
them is R* = 1/(2^b - 1); over all gradients the target clipped fraction is r* = alpha / (2^b - 1)
(4 bits: 6.7e-5). Each backward, per layer: r = mean(|g| > gamma * g_max) and
    gamma <- clamp(gamma + eta * sign(r - r*), gamma_min, 1),        gamma starting at 1.

Under DDP with deferred updates (docs/methods.md §1.7) the update runs once per step on the rank mean of r.

Warm-up (docs/methods.md §1.6; official code, cvlab-yonsei/LBT train.py `update_interval` with init=True): on the
first batch's gradient, no optimizer step, iterate  ema <- m*ema + (1-m)*r(gamma); gamma <- gamma - eta  while
ema <= r*, then take one step back up. The loop runs on the same tensor, so `warmup_gamma` evaluates all of its
iterations in one vectorised pass (sort once, r(gamma_k) by binary search, EMA by a weighted cumulative sum).

Unconfirmed details, exposed as fields: `gamma_min` (official clamp 1e-3) and `warmup_momentum` (official 0.999);
the official warm-up step equals 1 - momentum, here `eta`, which is the same 1e-3 by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from quant.grad.base import GradPolicy


@dataclass(frozen=True, kw_only=True)
class LBTPolicy(GradPolicy):
    """Adaptive per-layer gamma that holds the clipped fraction at alpha / (2^b - 1)."""

    alpha: float = 1e-3
    eta: float = 1e-3
    gamma_min: float = 1e-3
    warmup_momentum: float = 0.999

    needs_clip_fraction: ClassVar[bool] = True
    has_warmup: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("alpha", "eta", "gamma_min", "warmup_momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"quant.grad.{name}={value!r} is invalid: use a number in (0, 1)")

    def target(self, bits: int) -> float:
        """r* = alpha / (2^b - 1), the clipped fraction that minimises the large-gradient error bound."""
        return self.alpha / (2**bits - 1)

    def update_gamma(self, gamma: Tensor, clip_fraction: Tensor, bits: int, g_max: Tensor | None = None) -> Tensor:
        step = self.eta * torch.sign(clip_fraction - self.target(bits))
        return (gamma + step).clamp(self.gamma_min, 1.0)

    def warmup_gamma(self, g: Tensor, g_max: Tensor, bits: int) -> Tensor:
        magnitudes = (g.abs().reshape(-1) / g_max).sort().values  # (N,) ascending, in [0, 1]
        n_steps = int(round((1.0 - self.gamma_min) / self.eta)) + 1
        k = torch.arange(n_steps, device=g.device, dtype=torch.float64)  # (K,)
        gammas = 1.0 - self.eta * k  # gamma at iteration k, while the loop is still stepping down
        above = magnitudes.numel() - torch.searchsorted(magnitudes, gammas.float(), right=True)
        r = above.double() / magnitudes.numel()  # (K,) clipped fraction at each gamma_k
        m = self.warmup_momentum
        # ema_k = (1-m) * sum_{j<=k} m^(k-j) r_j, with ema_{-1} = 0 (official loop starts from 0)
        ema = (1 - m) * m**k * torch.cumsum(r * m ** (-k), dim=0)
        crossed = ema > self.target(bits)
        first = crossed.int().argmax()  # first iteration whose EMA exceeds the target
        # The loop ends by stepping back up once; never crossing means it ran to the bottom of the range.
        gamma = torch.where(crossed.any(), gammas[first] + self.eta, self.gamma_min)
        return gamma.clamp(self.gamma_min, 1.0).float()
