"""Invariants every loader's `set_shard` / `set_epoch(start_batch=)` must keep, checked on samples (values).

A batch is compared as its list of samples (`unbatch`), so one check serves tensor batches and detection's lists.
"""
import torch


def same(a, b) -> bool:
    """Exact equality of nested tensors / dicts / lists / tuples / numbers."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def unbatch(batch) -> list:
    """(x (B, ...), y (B, ...)) or (images list, targets list) -> [(x_i, y_i), ...]."""
    first, second = batch
    return list(zip(first, second))


def epoch_samples(loader, epoch, start_batch=0) -> list[list]:
    """Samples of each batch of one pass over `epoch`."""
    loader.set_epoch(epoch, start_batch=start_batch)
    return [unbatch(batch) for batch in loader]


def check_train_shards(single: list[list], ranks: list[list[list]], world: int) -> None:
    """Rank r's step-k batch is the r-th equal slice of the single-process step-k batch (batch world x B).

    Only the last step may hold more than the single-process batch: its tail padded by wrapping round to the first
    samples of the epoch (at most world - 1 of them), so that every rank takes the same number of steps.
    """
    assert len(ranks) == world
    assert [len(r) for r in ranks] == [len(single)] * world  # DDP: equal step counts
    for k, expected in enumerate(single):
        parts = [rank[k] for rank in ranks]
        assert len({len(p) for p in parts}) == 1  # equal per-rank batch sizes, padded tail included
        union = [sample for part in parts for sample in part]
        padding = len(union) - len(expected)
        assert 0 <= padding < world and (padding == 0 or k == len(single) - 1)
        wrapped = [sample for batch in single for sample in batch][:padding]
        assert same(union, expected + wrapped), f"step {k}"


def check_test_shards(single: list[list], ranks: list[list[list]]) -> None:
    """The ranks' samples, in rank order, are the whole test set once and in order: disjoint and complete."""
    everything = [sample for batch in single for sample in batch]
    union = [sample for rank in ranks for batch in rank for sample in batch]
    assert len(union) == len(everything) and same(union, everything)
    sizes = [sum(len(b) for b in rank) for rank in ranks]
    assert max(sizes) - min(sizes) <= 1


def check_resume(make_loader, epoch: int, start_batch: int) -> None:
    """A fresh loader told start_batch yields exactly the uninterrupted epoch's batches from there; len() is kept."""
    full = epoch_samples(make_loader(), epoch)
    resumed_loader = make_loader()
    resumed = epoch_samples(resumed_loader, epoch, start_batch=start_batch)
    assert len(resumed_loader) == len(full)
    assert len(resumed) == len(full) - start_batch and same(resumed, full[start_batch:])
