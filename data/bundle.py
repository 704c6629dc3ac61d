"""DataBundle: the one object a data config builds for the trainer.

`hydra.utils.instantiate(cfg.data)` calls a `data.<module>.build(...)` function that returns this bundle;
`train.py` only ever touches the fields below and `shard`, so every dataset (in-memory tensors or a DataLoader
over image folders) looks the same to it. How the batches are cut across DDP processes and how a resumed epoch
skips its first batches is data/shard.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, runtime_checkable

import torch


@runtime_checkable
class EpochLoader(Protocol):
    """A re-iterable training batch source whose order and augmentation depend only on (seed, epoch).

    `set_epoch(e)` before iterating makes a resumed run see exactly the batches an uninterrupted run saw;
    `set_epoch(e, start_batch=k)` makes the passes until the next set_epoch start at batch k of epoch e (a run
    resumed mid-epoch). `len()` is the whole epoch's batch count for this rank, whatever start_batch is.
    `set_shard(rank, world)`: this process reads its slice of every global batch (data/shard.py).
    """

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...

    def set_shard(self, rank: int, world: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@runtime_checkable
class EvalLoader(Protocol):
    """A fixed-order test batch source; `set_shard(rank, world)` keeps a disjoint part, the parts covering the set."""

    def set_shard(self, rank: int, world: int) -> None: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(frozen=True, kw_only=True)
class DataBundle:
    """Everything the trainer needs from a dataset (classification, detection or super-resolution).

    train: yields (x, y) with x float32 (B, C, H, W) normalised and y int64 (B,); `len(train)` is
        batches per epoch; `train.set_epoch(e)` fixes shuffle + augmentation for epoch e.
    test: yields (x, y) in a fixed order without augmentation; under DDP each rank's shard of it.
    model_kwargs: passed to the model constructor, e.g. {"num_classes": 10, "in_channels": 1}.
    name: short dataset name for logs ("fashion_mnist").
    source: where the data actually came from: the folder or files read ("/usr/share/datasets/fashion-mnist"),
        or a description for generated data ("synthetic (data_seed=0)"). A builder may search several places
        (data/fashion_mnist.py), so `data.root` in config.yaml alone does not say which copy a run trained on.
    """

    name: str
    train: EpochLoader
    test: EvalLoader
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "unknown"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("DataBundle.name is empty; give the dataset a short name such as 'cifar10'")
        if not isinstance(self.train, EpochLoader):
            raise TypeError(
                f"DataBundle.train is a {type(self.train).__name__}; it needs set_epoch(), set_shard(), __len__ and "
                "__iter__"
            )
        if not isinstance(self.test, EvalLoader):
            raise TypeError(f"DataBundle.test is a {type(self.test).__name__}; it needs set_shard() and __iter__")
        # Each task's bundle carries its own sizes (classification/detection: num_classes; super-resolution: scale);
        # whichever of them it carries must be a positive int, and it must carry at least in_channels or num_classes.
        if not {"num_classes", "in_channels"} & self.model_kwargs.keys():
            raise ValueError(f"DataBundle.model_kwargs={self.model_kwargs!r} names no num_classes or in_channels")
        for key in ("num_classes", "in_channels", "scale"):
            value = self.model_kwargs.get(key, 1)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DataBundle.model_kwargs[{key!r}]={value!r}; expected a positive int")

    def shard(self, rank: int, world: int) -> None:
        """Make this process (`rank` of `world`) read only its share: call once, before `len(train)` is used.

        train: rank r reads the r-th slice of every global batch of world x batch_size, all ranks the same number
        of steps (the tail padded by wrapping round the epoch's order); test: a disjoint contiguous block, the
        blocks covering the test set exactly once. world=1 (the default) is the single-process behaviour.
        """
        self.train.set_shard(rank, world)
        self.test.set_shard(rank, world)
