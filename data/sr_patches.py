"""Super-resolution loaders: random aligned (LR, HR) training patches, and whole test images one at a time.

Training follows EDSR (Lim et al. 2017, Sec. 4.1): a random LR patch and the HR patch `scale` times larger at
the same place, then a random horizontal flip, vertical flip and 90-degree rotation (transpose), each with
probability 1/2. An "epoch" is `patches_per_epoch` patches drawn so every image is visited equally often
(EDSR repeats DIV2K 20 times per epoch for the same reason). Which image, where, and which flips are all
drawn in `set_epoch` from a generator seeded by (seed, epoch) only, so a resumed run and any number of
DataLoader workers see exactly the same batches. Patch i of an epoch is a function of (seed, epoch, i), so the DDP
shards of data/shard.py read the very patches one process would, and a mid-epoch resume skips by patch number.

Values: float32 in [0, 1] (uint8 / 255); the model subtracts the RGB mean itself (models/edsr.py).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from data.checks import check_int
from data.loaders import epoch_seed
from data.shard import PlannedLoader, ShardBatchSampler, ShardPlan
from data.sr_images import SRPairs


class SRPatchDataset(Dataset):
    """Item i: (lr (3, p, p), hr (3, s*p, s*p)) float32 in [0, 1], a pure function of (seed, epoch, i)."""

    def __init__(self, pairs: SRPairs, *, lr_patch_size: int, patches_per_epoch: int, augment: bool, seed: int):
        check_int("lr_patch_size", lr_patch_size)
        check_int("patches_per_epoch", patches_per_epoch)
        if pairs.cache is not None:
            small = [pairs.names[i] for i, (lr, _) in enumerate(pairs.cache) if min(lr.shape[-2:]) < lr_patch_size]
            if small:
                raise ValueError(
                    f"training images {small} have an LR side below data.lr_patch_size={lr_patch_size}; "
                    "lower data.lr_patch_size or drop those images"
                )
        self.pairs = pairs
        self.lr_patch_size = lr_patch_size
        self.patches_per_epoch = patches_per_epoch
        self.augment = augment
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the whole epoch's plan: image order, patch corners (as fractions) and flip bits."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, int(epoch)))
        n, total = len(self.pairs), self.patches_per_epoch
        # Concatenated permutations: every image appears floor or ceil of total/n times, in random order.
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-total // n))])[:total]
        corner = torch.rand(total, 2, generator=generator)  # (P, 2) fraction of the free range along (y, x)
        flips = torch.rand(total, 3, generator=generator) < 0.5  # (P, 3) hflip, vflip, transpose
        if not self.augment:
            flips.zero_()
        # Plain lists: __getitem__ then costs no tensor indexing per patch.
        self.plan = list(zip(order.tolist(), corner.tolist(), flips.tolist()))

    def __len__(self) -> int:
        return self.patches_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, (fy, fx), (hflip, vflip, transpose) = self.plan[index]
        lr, hr = self.pairs[image]  # (3, h, w), (3, s*h, s*w) uint8
        p, s = self.lr_patch_size, self.pairs.scale
        h, w = lr.shape[-2:]
        if h < p or w < p:
            raise ValueError(f"training image {self.pairs.names[image]} has LR size {(h, w)} below "
                             f"lr_patch_size={p}; lower it or drop the image")
        y, x = int(fy * (h - p + 1)), int(fx * (w - p + 1))
        lr = lr[:, y : y + p, x : x + p]  # (3, p, p)
        hr = hr[:, s * y : s * (y + p), s * x : s * (x + p)]  # (3, s*p, s*p)
        if hflip:
            lr, hr = lr.flip(-1), hr.flip(-1)
        if vflip:
            lr, hr = lr.flip(-2), hr.flip(-2)
        if transpose:
            lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        return lr.float().div_(255), hr.float().div_(255)


class SRTrainLoader(PlannedLoader):
    """Batches (lr (B, 3, p, p), hr (B, 3, s*p, s*p)) of an SRPatchDataset; full batches only.

    Dropping the last partial batch keeps every step at the same batch size (EDSR trains with a fixed 16); under
    DDP the partial last *global* batch is dropped, so no padding is needed (data/shard.py).
    Workers are started per epoch (not persistent) so each one sees the plan drawn by the latest set_epoch.
    """

    def __init__(self, dataset: SRPatchDataset, *, batch_size: int, num_workers: int = 0) -> None:
        if not isinstance(batch_size, int) or not 1 <= batch_size <= len(dataset):
            raise ValueError(f"data.batch_size={batch_size!r} is invalid: use an integer in "
                             f"1..data.patches_per_epoch={len(dataset)}")
        check_int("num_workers", num_workers, minimum=0)
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.plan = ShardPlan(len(dataset), batch_size, pad=True, drop_last=True)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Draw epoch `epoch`'s patches; the next passes start at this rank's batch `start_batch`."""
        super().set_epoch(epoch, start_batch)
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Positions are patch numbers: the dataset already holds the epoch's plan in order.
        loader = DataLoader(self.dataset, batch_sampler=ShardBatchSampler(self.plan), num_workers=self.num_workers)
        return iter(loader)


class SRImageDataset(Dataset):
    """Whole test images: item i is (lr (3, h, w), hr (3, s*h, s*w)) float32 in [0, 1], no augmentation."""

    def __init__(self, pairs: SRPairs) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr, hr = self.pairs[index]
        return lr.float().div_(255), hr.float().div_(255)


class SRTestLoader(PlannedLoader):
    """One whole test image per batch, (1, 3, h, w) and (1, 3, s*h, s*w): test images differ in size.

    `set_shard(rank, world)` keeps a contiguous block of the images (data/shard.py), the blocks covering the set.
    """

    def __init__(self, pairs: SRPairs, *, num_workers: int = 0) -> None:
        check_int("num_workers", num_workers, minimum=0)
        self.dataset = SRImageDataset(pairs)
        self.num_workers = num_workers
        self.plan = ShardPlan(len(self.dataset), 1, pad=False)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(self.dataset, batch_sampler=ShardBatchSampler(self.plan), num_workers=self.num_workers)
        return iter(loader)

