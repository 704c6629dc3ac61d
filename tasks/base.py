"""What the one trainer needs from a task: a loss, an evaluation, and how to move a batch.

The trainer (train.py) is task-agnostic: classification, detection and super-resolution differ only in these
few methods. A task never sees the config; it is built from plain arguments by the `task` config group.
"""
from typing import Any, Iterable, Protocol

import torch
from torch import nn


class Task(Protocol):
    #: key of the primary metric in `evaluate`'s dict (higher is better), e.g. "top1", "map", "psnr"
    metric: str

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move one batch from the loader to `device` (non_blocking where possible)."""

    def batch_size(self, batch: Any) -> int:
        """Number of samples in a batch (for throughput in img/s)."""

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar training loss of `model` (already in train mode) on `batch` (already on device)."""

    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        """Metrics over a whole loader; `model` is already in eval mode and grad is off.

        Returns plain floats (one host sync at the end, not per batch), always including `self.metric`.
        """
