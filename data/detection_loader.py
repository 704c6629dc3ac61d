"""An epoch-seeded batch loader for detection datasets (satisfies data.bundle.EpochLoader).

Shuffle order and flip augmentation depend only on (seed, epoch, index), never on global RNG state or on
which worker loads a sample, so a resumed run sees exactly the batches an uninterrupted run saw.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data.bundle import DataBundle
from data.detection_transforms import collate_detection, hflip


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


class _EpochSampler(Sampler):
    def __init__(self, size: int, *, shuffle: bool, seed: int):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        return iter([(int(i), self.epoch) for i in order])


class DetectionLoader:
    """Batches of (images: list of (3, H, W) float tensors, targets: list of box/label dicts).

    `len()` is batches per epoch; call `set_epoch(e)` before iterating epoch e (train split). The test split
    uses shuffle=False, flip=False and is the same on every pass.
    """

    def __init__(
        self,
        dataset: Sequence,
        *,
        batch_size: int,
        shuffle: bool,
        flip: bool,
        seed: int,
        num_workers: int = 0,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} is invalid: use a positive int")
        if num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers} is invalid: use 0 (main process) or more")
        if len(dataset) == 0:
            raise ValueError(f"the detection dataset {type(dataset).__name__} is empty: check its split/annotations")
        self.dataset = dataset
        self.batch_size, self.drop_last = batch_size, drop_last
        self._sampler = _EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
        self._loader = DataLoader(
            _EpochFlip(dataset, flip=flip, seed=seed),
            batch_size=batch_size,
            sampler=self._sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=collate_detection,
            persistent_workers=num_workers > 0,
        )

    def set_epoch(self, epoch: int) -> None:
        self._sampler.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        return iter(self._loader)


def detection_bundle(name: str, train_set: Dataset, test_set: Dataset, *, num_classes: int, image_size: int,
                     batch_size: int, eval_batch_size: int, num_workers: int, flip: bool, seed: int) -> DataBundle:
    """The bundle every detection set builds: shuffled, flipped train loader; fixed-order test loader.

    `num_classes` counts the background class (torchvision's convention); the square `image_size` tells the
    detector its input size.
    """
    common = dict(seed=seed, num_workers=num_workers)
    return DataBundle(
        name=name,
        train=DetectionLoader(train_set, batch_size=batch_size, shuffle=True, flip=flip, **common),
        test=DetectionLoader(test_set, batch_size=eval_batch_size, shuffle=False, flip=False, **common),
        model_kwargs={"num_classes": num_classes, "in_channels": 3, "image_size": image_size},
    )

