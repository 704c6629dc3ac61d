"""Multi-GPU and multi-node data parallelism on torch.distributed, set up from the launcher's environment.

One process per GPU (or per CPU slot with gloo). Where the rank comes from:
- `torchrun --nproc_per_node=N train.py ...` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
- under SLURM through submitit (`hydra/launcher=slurm` with `tasks_per_node` = GPUs per node), every task runs
  the job and submitit's `TorchDistributedEnvironment` exports the same variables from SLURM's;
- otherwise the run is a single process (world 1) and nothing here does anything.

Rank 0 owns everything that touches the disk or W&B; every rank trains. The quantizer state is kept identical
across ranks by quant.apply_deferred_updates (one packed all-reduce per step), the data is sharded by
DataBundle.shard, and evaluation metrics are summed over ranks inside the tasks.
"""
from __future__ import annotations

import datetime
import sys
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank in 0..world-1, and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control: Any = None  # a gloo group for small host-side agreements (preemption flags), None on one process

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(t)

    def any(self, flags: list[bool]) -> list[bool]:
        """Element-wise OR of small host flags over ranks (a CPU all-reduce on the gloo group)."""
        if not self.enabled:
            return flags
        t = torch.tensor(flags, dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return [bool(v) for v in t.tolist()]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (pickled over the gloo group): one entry per rank, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.control)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place and return it (asynchronous on GPU: no host sync); unchanged when no
    process group is initialized (one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _export_submitit_env() -> None:
    """Under a submitit SLURM job with several tasks, export torch's env:// variables from SLURM's."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return
    try:
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment
        JobEnvironment()  # raises outside a submitit job
    except (ImportError, RuntimeError):
        return
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def launched_world_size() -> int:
    """How many processes the launcher started for this run (torchrun's WORLD_SIZE, a submitit job's tasks); 1 alone.

    Known before the process group exists, so the run folder's name can carry it (runtime.cli.run_id)."""
    _export_submitit_env()
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str) -> Dist:
    """Join the process group the launcher described (if any) and pick this rank's device.

    `device` is the run's setting: auto | cpu | cuda | cuda:N. Under several ranks, cuda means this rank's
    local GPU (LOCAL_RANK); the backend is NCCL on GPUs and gloo on CPUs.
    """
    world = launched_world_size()
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if world < 2:
        return Dist(device=torch.device(("cuda" if use_cuda else "cpu") if device == "auto" else device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    control = dist.new_group(backend="gloo") if use_cuda else dist.group.WORLD
    return Dist(rank=rank, world=world, local_rank=local_rank, control=control,
                device=torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """DistributedDataParallel around `model` on several ranks (gradients averaged over ranks), else `model`.

    broadcast_buffers=True (torchvision's recipe): BatchNorm statistics follow rank 0. The quantizer buffers are
    identical on every rank anyway (quant.apply_deferred_updates), so the broadcast changes nothing for them.
    """
    if not d.enabled:
        return model
    ids = [d.device.index] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def quiet_hydra_on_workers() -> None:
    """On ranks > 0 of a torchrun job, keep Hydra from writing the run folder's .hydra/ and train.log again.

    Called before Hydra parses sys.argv; `hydra.*` overrides do not enter the run folder's name.
    """
    if int(os.environ.get("RANK", "0")) > 0:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none"]


def _fingerprints(model: nn.Module, skip: tuple[str, ...]) -> dict[str, str]:
    """SHA-1 of the bytes of every parameter and persistent buffer whose name has none of `skip`'s parts."""
    import hashlib

    tensors = {**dict(model.named_parameters()), **{n: b for n, b in model.named_buffers()}}
    state = model.state_dict(keep_vars=True)
    return {name: hashlib.sha1(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
            for name, t in tensors.items() if name in state and not any(s in name.split(".") for s in skip)}


def replica_mismatch(model: nn.Module, d: Dist, skip: tuple[str, ...] = ("running_mean", "running_var",
                                                                         "num_batches_tracked")) -> list[str]:
    """Names of the weights and quantizer buffers that are not bit-identical on every rank ([] on one process).

    Skipped by default: BatchNorm statistics (each rank's own batches since the last forward's broadcast). Run at
    epoch ends: a host copy of the model.
    """
    if not d.enabled:
        return []
    mine = _fingerprints(model, skip)
    differing = set()
    for theirs in d.gather(mine):
        differing |= {name for name in mine if theirs.get(name) != mine[name]}
    return sorted(differing)
