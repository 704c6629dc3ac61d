"""DataBundle: the one object a data config builds for the trainer.

`hydra.utils.instantiate(cfg.data)` calls a `data.<module>.build(...)` function that returns this bundle;
`train.py` only ever touches the five fields below, so every dataset (in-memory tensors or a DataLoader over
image folders) looks the same to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

import torch


@runtime_checkable
class EpochLoader(Protocol):
    """A re-iterable batch source whose order and augmentation depend only on (seed, epoch).

    `set_epoch(e)` before iterating makes a resumed run see exactly the batches an uninterrupted run saw.
    """

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(frozen=True, kw_only=True)
class DataBundle:
    """Everything the trainer needs from a dataset (classification, detection or super-resolution).

    train: yields (x, y) with x float32 (B, C, H, W) normalised and y int64 (B,); `len(train)` is
        batches per epoch; `train.set_epoch(e)` fixes shuffle + augmentation for epoch e.
    test: yields (x, y) in a fixed order without augmentation.
    model_kwargs: passed to the model constructor, e.g. {"num_classes": 10, "in_channels": 1}.
    name: short dataset name for logs ("fashion_mnist").
    """

    name: str
    train: EpochLoader
    test: Iterable[tuple[torch.Tensor, torch.Tensor]]
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("DataBundle.name is empty; give the dataset a short name such as 'cifar10'")
        if not isinstance(self.train, EpochLoader):
            raise TypeError(
                f"DataBundle.train is a {type(self.train).__name__}; it needs set_epoch(), __len__ and __iter__"
            )
        # Each task's bundle carries its own sizes (classification/detection: num_classes; super-resolution: scale);
        # whichever of them it carries must be a positive int, and it must carry at least in_channels or num_classes.
        if not {"num_classes", "in_channels"} & self.model_kwargs.keys():
            raise ValueError(f"DataBundle.model_kwargs={self.model_kwargs!r} names no num_classes or in_channels")
        for key in ("num_classes", "in_channels", "scale"):
            value = self.model_kwargs.get(key, 1)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DataBundle.model_kwargs[{key!r}]={value!r}; expected a positive int")
