"""min-max gradient interval: clip at the batch maximum, gamma = 1 (docs/methods.md §1.3; the paper's "Baseline")."""
from __future__ import annotations

from dataclasses import dataclass

from quant.grad.base import GradPolicy


@dataclass(frozen=True, kw_only=True)
class MinMaxPolicy(GradPolicy):
    """c = max|g|: nothing is clipped, and the few largest values set a coarse step for everything else."""
