"""Combine per-rank evaluation results over DDP processes; plain pass-throughs in a single process.

Under DDP every rank evaluates its own disjoint shard of the test set (data/shard.py). Metrics that are means over
samples are kept as sums and counts on device and summed over ranks ONCE at the end; metrics that need every
prediction at once (detection mAP) gather the per-image results. Every rank must call these (they are collectives),
and every rank gets the same totals.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from runtime.distributed import all_reduce_sum  # noqa: F401 - the tasks' sum over ranks is the trainer's


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (pickled; keep it small and on CPU); [obj] alone.

    With NCCL, torch.cuda.set_device(local_rank) must have been called (torch.distributed's own requirement).
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
