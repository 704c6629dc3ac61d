"""Direction-sensitive gradient clipping, DSGC (Zhu et al., "Towards Unified INT8 Training for Convolutional Neural
Network", CVPR 2020, arXiv 1912.12607, Sec. 4.1; docs/methods.md §1.10).

The paper's convergence analysis bounds the harm of a quantized gradient by the deviation of its direction, so
DSGC picks the clip c that minimises the cosine distance between the gradient g and its quantized value:
    c* = argmin_c  d(c),   d(c) = 1 - cos(g, Q_c(g)).
Here Q_c is our symmetric grid with stochastic rounding (docs/methods.md §1.2), and d is scored in expectation
over the rounding so the choice does not depend on one random draw. With x_c = clamp(g, -c, c) and the
in-range rounding variance f(1-f)D^2 (zero for clipped elements),
    E[g . Q_c(g)] = sum g x_c,    E|Q_c(g)|^2 = sum x_c^2 + f(1-f)D^2,
    d(c) ~ 1 - sum g x_c / (|g| sqrt(E|Q_c(g)|^2)).
The search is the MSE policy's (quant.grad.mse: coarse-to-fine over [gamma_min, 1] in log space, the largest
values always scored, a random subsample for the rest) with this score in place of the squared error: unlike MSE,
it ignores a uniform shrinkage of the gradient and penalises only the change of direction.

Departures, stated: the paper finds c* with its own search and refreshes it periodically; we search on every
backward (no host sync). Its second technique, deviation-counteractive learning-rate scaling (the layer's learning
rate scaled by a decreasing function of d), is not implemented here: this policy is DSGC alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from quant.grad.mse import MSEPolicy
from quant.primitives import expected_squared_error


def expected_cosine_distance(values: Tensor, weights: Tensor, clips: Tensor, bits: int) -> Tensor:
    """(K,) 1 - E[g . Q_c(g)] / (|g| sqrt(E|Q_c(g)|^2)) for candidate clips (K, 1) on weighted values (1, S).

    Weighted sums (weights estimate the whole tensor's mean, quant.grad.mse._scored_values) in each term; the
    ratio is then an estimate of the whole tensor's expected cosine."""
    clipped = torch.maximum(torch.minimum(values, clips), -clips)  # (K, S)
    variance = torch.where(values.abs() > clips, 0.0, expected_squared_error(values, clips, bits))  # in range only
    dot = (values * clipped * weights).sum(dim=1)  # (K,)
    norm_g = (values.square() * weights).sum(dim=1).sqrt()  # (1,)
    norm_q = ((clipped.square() + variance) * weights).sum(dim=1).sqrt()  # (K,)
    return 1 - dot / (norm_g * norm_q).clamp_min(torch.finfo(values.dtype).tiny)


@dataclass(frozen=True, kw_only=True)
class UnifiedInt8Policy(MSEPolicy):
    """gamma = argmin of the expected cosine distance between g and its quantized value (DSGC)."""

    def score(self, values: Tensor, weights: Tensor, clips: Tensor, bits: int) -> Tensor:
        return expected_cosine_distance(values, weights, clips, bits)
