"""SRDataBundle: the trainer's DataBundle with super-resolution's model_kwargs ({"scale", "in_channels"}).

`data.bundle.DataBundle` validates `num_classes`, which an SR dataset does not have; this subclass keeps every
field (and `isinstance(bundle, DataBundle)`) and validates `scale` and `in_channels` instead. If DataBundle
ever checks only the keys a bundle actually carries, SR builders can return DataBundle directly.
"""
from __future__ import annotations

from dataclasses import dataclass

from data.bundle import DataBundle, EpochLoader


@dataclass(frozen=True, kw_only=True)
class SRDataBundle(DataBundle):
    """train yields (lr (B, C, p, p), hr (B, C, s*p, s*p)); test yields one (lr, hr) image pair per batch."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("SRDataBundle.name is empty; give the dataset a short name such as 'div2k_x2'")
        if not isinstance(self.train, EpochLoader):
            raise TypeError(
                f"SRDataBundle.train is a {type(self.train).__name__}; it needs set_epoch(), __len__ and __iter__"
            )
        for key in ("scale", "in_channels"):
            value = self.model_kwargs.get(key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SRDataBundle.model_kwargs[{key!r}]={value!r}; expected a positive int")
