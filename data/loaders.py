"""InMemoryLoader: batches from a dataset held whole as one uint8 tensor (Fashion-MNIST, CIFAR, synthetic).

These datasets fit in memory (CIFAR-10 train is 150 MB as uint8), so instead of a DataLoader with per-sample
PIL transforms we index the tensor, augment the whole batch with one gather (`data.augment`) and normalise on
the fly. Shuffle order and augmentation come from a generator seeded by (seed, epoch) only, so a run resumed
at epoch e sees exactly the batches an uninterrupted run saw. The crop/flip of an epoch is drawn per *position* of
that order, so under DDP (data/shard.py) a sample's augmentation does not depend on which rank reads it.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from data.augment import AugmentSpec, crop_flip, normalize, sample_crop_flip
from data.bundle import DataBundle
from data.checks import check_int, check_optional_int
from data.shard import PlannedLoader, ShardPlan


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the generator for one epoch: distinct for every (seed, epoch) pair a run will meet."""
    return (seed * 1_000_003 + epoch) % (2**63)


def first_n(total: int, train_subset: int | None) -> int:
    """Validate `train_subset` (None = all) against `total` and return how many leading samples to keep."""
    return total if train_subset is None else check_optional_int("train_subset", train_subset, maximum=total)


class InMemoryLoader(PlannedLoader):
    """Iterates (x, y): x float32 (B, C, H, W) normalised, y int64 (B,), from uint8 images (N, C, H, W).

    shuffle/augment are for training; the test loader uses neither and yields a fixed order. The last batch
    may be smaller (no drop_last), as in the LBT official code and torchvision's CIFAR recipe.
    `device` keeps the dataset (and the augmentation work) on that device; batches come out there.
    pad_shards: under `set_shard` every rank takes the same number of batches, the tail padded by wrapping
    (training); False: disjoint shards covering the set exactly once (evaluation). See data/shard.py.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool,
        augment: AugmentSpec | None,
        seed: int,
        pad_shards: bool,
        device: str | torch.device = "cpu",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries; expected {images.shape[1]} (channels)")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # (N, C, H, W) uint8
        self.labels = labels.to(self.device, torch.int64)  # (N,)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)  # (C,)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)  # (C,)
        self.plan = ShardPlan(images.shape[0], batch_size, pad=pad_shards)  # checks batch_size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed

    def hold_out(self, fraction: float, seed: int) -> "InMemoryLoader":
        """Move a random `fraction` of this loader's samples into a new loader and return it (e.g. the held-out
        split an architecture search trains its logits on); this one keeps the rest. Call before set_shard.

        The split depends only on `seed`. The held-out loader shuffles by (seed, epoch) like this one, without
        augmentation (it measures how well the current network generalises).
        """
        n = self.images.shape[0]
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"held-out fraction={fraction!r} is invalid: use a number strictly between 0 and 1")
        k = round(n * fraction)
        if not 0 < k < n:
            raise ValueError(f"held-out fraction={fraction} of {n} training samples leaves an empty split")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, -1))).to(self.device)
        held, kept = order[:k].sort().values, order[k:].sort().values
        heldout = InMemoryLoader(self.images[held], self.labels[held], batch_size=self.batch_size, mean=self.mean.tolist(),
                                 std=self.std.tolist(), shuffle=True, augment=None, seed=self.seed, pad_shards=True,
                                 device=self.device)
        self.images, self.labels = self.images[kept], self.labels[kept]
        self.plan = ShardPlan(n - k, self.batch_size, pad=self.plan.pad)
        return heldout

    def _epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Order, crop offsets and flips for the whole epoch, drawn on CPU then moved in one copy each."""
        n = self.images.shape[0]
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.augment is None:
            return order.to(self.device), None, None
        offsets, flips = sample_crop_flip(n, spec=self.augment, generator=generator)
        return order.to(self.device), offsets.to(self.device), flips.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flips = self._epoch_plan()
        n = order.shape[0]
        for batch in self.plan.batches():
            # A slice of the epoch's order; only a padded tail batch (DDP) runs past its end and wraps round.
            pos = slice(batch.start, batch.stop) if batch.stop <= n else torch.arange(batch.start, batch.stop,
                                                                                      device=self.device) % n
            idx = order[pos]  # (B,)
            x = self.images[idx]  # (B, C, H, W) uint8
            if self.augment is not None:
                x = crop_flip(x, offsets[pos], flips[pos], pad=self.augment.crop_padding)
            yield normalize(x, self.mean, self.std), self.labels[idx]


def in_memory_bundle(
    name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
    mean, std, batch_size: int, eval_batch_size: int, seed: int, train_subset: int | None,
    augment: AugmentSpec | None, device: str, num_classes: int, source: str,
) -> DataBundle:
    """The bundle every in-memory classification set builds: shuffled, augmented train; fixed-order test.

    `train` / `test` are (uint8 images (N, C, H, W), int64 labels (N,)); `train_subset` keeps the first N;
    `source` is DataBundle.source (where the tensors came from).
    """
    check_int("batch_size", batch_size)
    check_int("eval_batch_size", eval_batch_size)
    (train_x, train_y), (test_x, test_y) = train, test
    n = first_n(train_x.shape[0], train_subset)
    common = dict(mean=mean, std=std, seed=seed, device=device)
    train_loader = InMemoryLoader(train_x[:n], train_y[:n], batch_size=batch_size, shuffle=True, augment=augment,
                                  pad_shards=True, **common)
    test_loader = InMemoryLoader(test_x, test_y, batch_size=eval_batch_size, shuffle=False, augment=None,
                                 pad_shards=False, **common)
    return DataBundle(name=name, train=train_loader, test=test_loader, source=source,
                      model_kwargs={"num_classes": num_classes, "in_channels": int(train_x.shape[1])})

