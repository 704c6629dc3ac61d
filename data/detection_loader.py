"""An epoch-seeded batch loader for detection datasets (satisfies data.bundle.EpochLoader).

Shuffle order and flip augmentation depend only on (seed, epoch, index), never on global RNG state, on which
worker loads a sample or on the DDP rank, so a resumed run sees exactly the batches an uninterrupted run saw.
Batches are cut by a data/shard.py plan: DDP shards, and a mid-epoch resume that loads nothing it skips.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.bundle import DataBundle
from data.checks import check_int, check_ints
from data.detection_transforms import collate_detection, hflip
from data.shard import PlannedLoader, ShardBatchSampler, ShardPlan


class _EpochFlip(Dataset):
    """Reads `dataset[index]` and mirrors it with probability 1/2, decided by (seed, epoch, index).

    Keys are (index, epoch) pairs from `_EpochSampler`, so workers need no shared mutable epoch state.
    """

    def __init__(self, dataset: Dataset, *, flip: bool, seed: int):
        self.dataset, self.flip, self.seed = dataset, flip, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        image, target = self.dataset[index]
        if self.flip and np.random.default_rng([self.seed, epoch, index]).random() < 0.5:
            image, target = hflip(image, target)
        return image, target


class _EpochOrder:
    """The epoch's global order as (index, epoch) keys for `_EpochFlip`; a permutation seeded by (seed, epoch)."""

    def __init__(self, size: int, *, shuffle: bool, seed: int):
        self.size, self.shuffle, self.seed = size, shuffle, seed

    def __call__(self, epoch: int) -> list[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        return [(int(i), epoch) for i in order]


class DetectionLoader(PlannedLoader):
    """Batches of (images: list of (3, H, W) float tensors, targets: list of box/label dicts).

    `len()` is batches per epoch; call `set_epoch(e)` before iterating epoch e (train split). The test split
    uses shuffle=False, flip=False and is the same on every pass. pad_shards: see data/shard.py (True for training).
    """

    def __init__(
        self,
        dataset: Sequence,
        *,
        batch_size: int,
        shuffle: bool,
        flip: bool,
        seed: int,
        pad_shards: bool,
        num_workers: int = 0,
        drop_last: bool = False,
    ):
        check_int("num_workers", num_workers, minimum=0)  # batch_size: checked by ShardPlan and detection_bundle
        if len(dataset) == 0:
            raise ValueError(f"the detection dataset {type(dataset).__name__} is empty: check its split/annotations")
        self.dataset = dataset
        self.batch_size, self.drop_last = batch_size, drop_last
        self.plan = ShardPlan(len(dataset), batch_size, pad=pad_shards, drop_last=drop_last)
        self._loader = DataLoader(
            _EpochFlip(dataset, flip=flip, seed=seed),
            batch_sampler=ShardBatchSampler(self.plan, _EpochOrder(len(dataset), shuffle=shuffle, seed=seed)),
            num_workers=num_workers,
            collate_fn=collate_detection,
            persistent_workers=num_workers > 0,  # the plan stays in this process; keys carry the epoch
        )

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        return iter(self._loader)


def detection_bundle(name: str, train_set: Dataset, test_set: Dataset, *, num_classes: int, image_size: int,
                     batch_size: int, eval_batch_size: int, num_workers: int, flip: bool, seed: int,
                     source: str) -> DataBundle:
    """The bundle every detection set builds: shuffled, flipped train loader; fixed-order test loader.

    `num_classes` counts the background class (torchvision's convention); the square `image_size` tells the
    detector its input size; `source` is DataBundle.source (the folder or files read).
    """
    check_ints(batch_size=batch_size, eval_batch_size=eval_batch_size)
    common = dict(seed=seed, num_workers=num_workers)
    return DataBundle(
        name=name,
        train=DetectionLoader(train_set, batch_size=batch_size, shuffle=True, flip=flip, pad_shards=True, **common),
        test=DetectionLoader(test_set, batch_size=eval_batch_size, shuffle=False, flip=False, pad_shards=False,
                             **common),
        model_kwargs={"num_classes": num_classes, "in_channels": 3, "image_size": image_size}, source=source,
    )

