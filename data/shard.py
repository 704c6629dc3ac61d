"""Which batches of an epoch one process reads: DDP sharding and mid-epoch resume, shared by every loader.

Each epoch has ONE global order of its n samples (a permutation drawn from (seed, epoch) only, or 0..n-1 for
evaluation), the same in every process. A `ShardPlan` says which *positions* of that order this rank reads, batch
by batch; each loader looks the positions up in its order. Augmentation is keyed by the position or the sample
index, so it never depends on the rank or on the number of processes.

Training (`pad=True`), W ranks with per-rank batch B (global batch W*B): global batch k is positions
[k*W*B, (k+1)*W*B) and rank r reads the r-th of its W equal slices, so the ranks' batches of step k put together in
rank order are exactly what one process with batch W*B reads at step k. The last global batch, with m < W*B
positions, is cut into W slices of ceil(m/W); the up to W-1 positions past the end of the order wrap round to its
start (positions n, n+1, ... read the samples at positions 0, 1, ..., augmentation included), as torch's
DistributedSampler pads, so every rank takes the same number of steps, which DDP needs. With `drop_last` the
partial global batch is dropped instead. W=1 gives exactly the single-process batches.

Evaluation (`pad=False`): rank r reads the contiguous block [r*n//W, (r+1)*n//W) in batches of B. The shards are
disjoint and cover the set exactly once (no padding, so no sample is counted twice); they differ by at most one
sample and may differ in batch count. tasks/reduce.py sums the metrics over ranks.

Resume: `set_epoch(e, start_batch=k)` makes the next passes start at this rank's batch k of epoch e (the global
step k, the same on every rank), skipping by position: nothing before it is read or decoded. `len()` always
counts the whole epoch's batches. The positions of batch k depend on the world size, so resume with the world
size the checkpoint was written with.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

from torch.utils.data import Sampler


def check_shard(rank, world) -> None:
    """ValueError (one line) unless rank and world are integers with 0 <= rank < world."""
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, world))
    if not ints or world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard rank={rank!r} world={world!r} is invalid: use integers with 0 <= rank < world "
                         "(world = number of processes, rank = this process's index)")


class ShardPlan:
    """This rank's batches of one epoch, as ranges of positions into the epoch's global order of `size` samples.

    pad=True: training (equal step counts on every rank, tail padded by wrapping); pad=False: evaluation
    (disjoint, complete shards). drop_last (training only): drop the partial last global batch.
    """

    def __init__(self, size: int, batch_size: int, *, pad: bool, drop_last: bool = False) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid: use an integer >= 1")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"the dataset has {size!r} samples: it needs at least one")
        if drop_last and not pad:
            raise ValueError("drop_last applies to training plans (pad=True) only: evaluation reads every sample")
        self.size, self.batch_size, self.pad, self.drop_last = size, batch_size, pad, drop_last
        self.rank, self.world, self.epoch, self.start_batch = 0, 1, 0, 0
        if len(self) == 0:
            raise ValueError(f"{size} samples make no full batch of batch_size={batch_size}: lower the batch size")

    def set_shard(self, rank: int, world: int) -> None:
        check_shard(rank, world)
        self.rank, self.world = rank, world
        if self.pad and len(self) == 0:
            raise ValueError(f"{self.size} samples per epoch make no full global batch of {world} processes x "
                             f"batch_size={self.batch_size}: lower data.batch_size or use more samples per epoch")
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not isinstance(start_batch, int) or isinstance(start_batch, bool) or not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch={start_batch!r} is invalid: use an integer in 0..{len(self)} "
                             f"(this rank's batches per epoch)")
        self.epoch, self.start_batch = int(epoch), start_batch

    def __len__(self) -> int:
        """Batches this rank reads in a whole epoch (whatever `start_batch` is)."""
        n, b, w = self.size, self.batch_size, self.world
        if not self.pad:
            lo, hi = self.rank * n // w, (self.rank + 1) * n // w
            return -(-(hi - lo) // b)
        return n // (w * b) if self.drop_last else -(-n // (w * b))

    def batches(self) -> list[range]:
        """Positions of this rank's batches from `start_batch` on; positions >= size wrap (read `p % size`)."""
        n, b, w, r = self.size, self.batch_size, self.world, self.rank
        if not self.pad:
            lo, hi = r * n // w, (r + 1) * n // w
            out = [range(start, min(start + b, hi)) for start in range(lo, hi, b)]
        else:
            full = n // (w * b)
            out = [range(k * w * b + r * b, k * w * b + (r + 1) * b) for k in range(full)]
            tail = n - full * w * b
            if tail and not self.drop_last:
                per = -(-tail // w)  # ceil: the last global batch is split evenly, padded by wrapping
                start = full * w * b + r * per
                out.append(range(start, start + per))
        return out[self.start_batch :]


class PlannedLoader:
    """`epoch`, `set_epoch`, `set_shard` and `len` of a loader whose batches its ShardPlan (`self.plan`) decides."""

    plan: ShardPlan

    @property
    def epoch(self) -> int:
        return self.plan.epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Fix order and augmentation for `epoch`; the next passes start at this rank's batch `start_batch`."""
        self.plan.set_epoch(epoch, start_batch)

    def set_shard(self, rank: int, world: int) -> None:
        self.plan.set_shard(rank, world)

    def __len__(self) -> int:
        return len(self.plan)


class ShardBatchSampler(Sampler[list]):
    """A DataLoader `batch_sampler` reading a ShardPlan at iteration time: lists of `order(epoch)[p % size]`.

    `order(epoch)` gives the epoch's global order (dataset indices, or whatever keys the dataset takes);
    None means positions are the indices. Lives in the main process, so workers never see the plan's state.
    """

    def __init__(self, plan: ShardPlan, order: Callable[[int], Sequence] | None = None) -> None:
        self.plan, self.order = plan, order

    def __len__(self) -> int:
        return len(self.plan) - self.plan.start_batch

    def __iter__(self) -> Iterator[list]:
        n = self.plan.size
        order = range(n) if self.order is None else self.order(self.plan.epoch)
        for positions in self.plan.batches():
            yield [order[p % n] for p in positions]
