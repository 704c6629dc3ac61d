"""MSE-optimal interval over the entire gradient (the paper's "entire-gradient" optimum; docs/methods.md §1.3).

Each backward, gamma minimises the expected squared quantization error of the whole tensor under stochastic
rounding: f(1-f)D^2 for in-range elements, (|g| - c)^2 for clipped ones (quant.primitives.expected_squared_error).

Why a coarse-to-fine search in log space: when a few outliers set g_max far above the bulk of a heavy-tailed
gradient, the optimum sits near gamma ~ 0.01, where a linear grid k/32 has nothing between 1/32 and 0 (7% extra
error on a Student-t(3) sample with one outlier, tests/quant/test_mse.py). Here `candidates` ratios are spent in
three stages: log-spaced over [gamma_min, 1] (the range LBT clamps gamma to), then twice log-spaced between the
neighbours of the previous stage's best. Each stage is one vectorised (K, N) pass and the best is picked on device
(argmin, a gather): no host sync, and the search compiles into the backward with Inductor.

Why the largest values are always scored: the error of a heavy-tailed tensor is dominated by its few largest
elements, which a uniform subsample usually misses; it then clips them hard (4x the optimum's error on a Cauchy
sample). With `sample_size` S < N, the S/8 largest |g| are scored exactly and a uniform sample (with replacement)
of the other elements stands for the rest: an unbiased estimate of the whole-tensor mean error. g_max always comes
from the full tensor.

Unconfirmed details, exposed as fields: the paper does not say how its MSE baseline searched. `candidates`,
`gamma_min` (LBT's clamp, 1e-3) and `sample_size` are our choices. The search assumes the error is unimodal in
log gamma at the first stage's spacing; measured within 1% of a dense 1000-point search on Student-t, Cauchy,
log-normal and spiky samples, not proven for every tensor. It runs on every backward: "every k steps" would need a
data-dependent skip, i.e. a host sync or a graph branch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from quant.grad.base import GradPolicy
from quant.primitives import expected_squared_error

# Three stages of about candidates/3: the last stage's spacing is ~3% in gamma for 32 candidates (two stages of 16
# leave ~6%, up to 1.4% extra error on light-tailed 8-bit gradients).
STAGES = 3
# _top_indices' chunks (a constant: torch.get_num_threads() would break the compiled graph). 2M elements, k = 4096,
# 2 threads: 7.6 ms with 2 chunks, 9.9 with 8, 22 ms for one topk; 8 keeps more threads busy where there are more.
TOP_K_CHUNKS = 8


def _log_grid(lo: Tensor | float, hi: Tensor | float, n: int, device) -> Tensor:
    """n ratios log-spaced from lo to hi, both included; lo and hi may be 0-dim tensors."""
    steps = torch.linspace(0.0, 1.0, n, device=device)  # (n,)
    return lo * (hi / lo) ** steps if isinstance(lo, Tensor) else torch.exp(math.log(lo) * (1 - steps))


def _top_indices(a: Tensor, k: int) -> Tensor:
    """Indices of the k largest values of 1-d `a` (the set topk picks; among equal values any may be chosen).

    On CPU as the top k of TOP_K_CHUNKS chunks' top k's: aten's topk of one long row runs on one thread, of several
    rows on several, and the exact top k lies inside the union of the chunks' top k."""
    n, rows = a.numel(), TOP_K_CHUNKS
    cols = n // rows
    if a.device.type != "cpu" or cols < k:
        return a.topk(k, sorted=False).indices
    starts = torch.arange(0, rows * cols, cols, device=a.device)[:, None]  # (rows, 1)
    chunk_top = a[:rows * cols].view(rows, cols).topk(k, dim=1, sorted=False).indices + starts  # (rows, k)
    candidates = torch.cat([chunk_top.reshape(-1), torch.arange(rows * cols, n, device=a.device)])  # + the tail
    return candidates[a[candidates].topk(k, sorted=False).indices]


def _scored_values(g: Tensor, sample_size: int | None) -> tuple[Tensor, Tensor]:
    """(values, weights) with sum(weights * err(values)) estimating mean(err(g)) without bias."""
    values = g.reshape(-1)  # (N,)
    n = values.numel()
    if sample_size is None or n <= sample_size:
        return values, torch.full_like(values, 1.0 / n)
    n_top = max(1, sample_size // 8)
    top = _top_indices(values.abs(), n_top)  # (k,) scored exactly
    sample = torch.randint(n, (sample_size - n_top,), device=g.device)  # (S-k,) uniform, the rest
    in_top = torch.zeros(n, dtype=torch.bool, device=g.device).index_fill_(0, top, True)
    weights = torch.cat([torch.full((n_top,), 1.0 / n, device=g.device),
                         (~in_top[sample]).to(g.dtype) / (sample_size - n_top)])
    return torch.cat([values[top], values[sample]]), weights  # (S,), (S,)


def _at(values: Tensor, index: Tensor) -> Tensor:
    """values[index] for a 0-dim index tensor, as a gather on device: torch.take and tensor indexing make
    torch.compile read the index on the host (Inductor fails on take; dynamo on indexing)."""
    return values.gather(0, index.reshape(1)).squeeze(0)


@dataclass(frozen=True, kw_only=True)
class MSEPolicy(GradPolicy):
    """gamma = argmin of the expected whole-tensor squared error, coarse-to-fine over [gamma_min, 1] in log space."""

    candidates: int = 32
    gamma_min: float = 1e-3
    sample_size: int | None = 32768

    fusable: ClassVar[bool] = False  # samples the largest values by position (chunked top-k)

    def __post_init__(self) -> None:
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) \
                or self.candidates < 2 * STAGES:
            raise ValueError(f"quant.grad.candidates={self.candidates!r} is invalid: use an integer >= {2 * STAGES} "
                             f"(at least 2 per search stage)")
        if isinstance(self.gamma_min, bool) or not isinstance(self.gamma_min, (int, float)) \
                or not 0 < self.gamma_min < 1:
            raise ValueError(f"quant.grad.gamma_min={self.gamma_min!r} is invalid: use a number in (0, 1)")
        if self.sample_size is not None and (isinstance(self.sample_size, bool)
                                             or not isinstance(self.sample_size, int) or self.sample_size < 2):
            raise ValueError(f"quant.grad.sample_size={self.sample_size!r} is invalid: use an integer >= 2, "
                             f"or null for the whole tensor")

    def choose_gamma(self, g: Tensor, g_max: Tensor, gamma: Tensor, bits: int) -> Tensor:
        values, weights = _scored_values(g, self.sample_size)  # (S,), (S,)
        sizes = [self.candidates // STAGES + (i < self.candidates % STAGES) for i in range(STAGES)]
        lo, hi = float(self.gamma_min), 1.0
        for n in sizes:
            ratios = _log_grid(lo, hi, n, g.device)  # (n,)
            best = self.score(values.unsqueeze(0), weights, (ratios * g_max).unsqueeze(1), bits).argmin()
            # The optimum lies between the best's neighbours (at an end of the range: between it and its one).
            lo = _at(ratios, (best - 1).clamp(min=0))
            hi = _at(ratios, (best + 1).clamp(max=n - 1))
        return _at(ratios, best)

    def score(self, values: Tensor, weights: Tensor, clips: Tensor, bits: int) -> Tensor:
        """(K,) what the search minimises for each candidate clip (K, 1) on the scored values (1, S): here the
        expected mean squared error; quant.grad.unified_int8 scores the cosine distance instead."""
        return (expected_squared_error(values, clips, bits) * weights).sum(dim=1)
