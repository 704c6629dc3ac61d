"""Super-resolution loaders: random aligned (LR, HR) training patches, and whole test images one at a time.

Training follows EDSR (Lim et al. 2017, Sec. 4.1): a random LR patch and the HR patch `scale` times larger at
the same place, then a random horizontal flip, vertical flip and 90-degree rotation (transpose), each with
probability 1/2. An "epoch" is `patches_per_epoch` patches drawn so every image is visited equally often
(EDSR repeats DIV2K 20 times per epoch for the same reason). Which image, where, and which flips are all
drawn in `set_epoch` from a generator seeded by (seed, epoch) only, so a resumed run and any number of
DataLoader workers see exactly the same batches.

Values: float32 in [0, 1] (uint8 / 255); the model subtracts the RGB mean itself (models/edsr.py).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from data.loaders import epoch_seed
from data.sr_images import SRPairs


class SRPatchDataset(Dataset):
    """Item i: (lr (3, p, p), hr (3, s*p, s*p)) float32 in [0, 1], a pure function of (seed, epoch, i)."""

    def __init__(self, pairs: SRPairs, *, lr_patch_size: int, patches_per_epoch: int, augment: bool, seed: int):
        if not isinstance(lr_patch_size, int) or lr_patch_size < 1:
            raise ValueError(f"lr_patch_size={lr_patch_size!r}; expected a positive int (EDSR uses 48)")
        if not isinstance(patches_per_epoch, int) or patches_per_epoch < 1:
            raise ValueError(f"patches_per_epoch={patches_per_epoch!r}; expected a positive int")
        if pairs.cache is not None:
            small = [pairs.names[i] for i, (lr, _) in enumerate(pairs.cache) if min(lr.shape[-2:]) < lr_patch_size]
            if small:
                raise ValueError(
                    f"training images {small} have an LR side below lr_patch_size={lr_patch_size}; "
                    "lower lr_patch_size or drop those images"
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


class SRTrainLoader:
    """Batches (lr (B, 3, p, p), hr (B, 3, s*p, s*p)) of an SRPatchDataset; full batches only.

    Dropping the last partial batch keeps every step at the same batch size (EDSR trains with a fixed 16).
    Workers are started per epoch (not persistent) so each one sees the plan drawn by the latest set_epoch.
    """

    def __init__(self, dataset: SRPatchDataset, *, batch_size: int, num_workers: int = 0) -> None:
        if not isinstance(batch_size, int) or not 1 <= batch_size <= len(dataset):
            raise ValueError(f"batch_size={batch_size!r}; expected an int in 1..patches_per_epoch={len(dataset)}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers={num_workers!r}; expected an int >= 0")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, shuffle=False, drop_last=True, num_workers=self.num_workers
        )
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


def make_test_loader(pairs: SRPairs, *, num_workers: int = 0) -> DataLoader:
    """One image per batch, (1, 3, h, w) and (1, 3, s*h, s*w): test images differ in size."""
    return DataLoader(SRImageDataset(pairs), batch_size=1, shuffle=False, num_workers=num_workers)
