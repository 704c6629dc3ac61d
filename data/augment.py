"""Batched, tensor-only augmentation for in-memory image datasets.

The standard CIFAR / Fashion-MNIST recipe (He et al. 2016, Sec. 4.2; also the LBT official code) is
"pad by p with zeros, take a random HxW crop, flip horizontally with probability 1/2". torchvision applies it
per sample on PIL images; here the whole batch is cropped and flipped by ONE gather on a uint8 tensor, which is
much faster on CPU and runs unchanged on a GPU. Random parameters are drawn from an explicit
`torch.Generator`, never the global RNG, so a (seed, epoch) pair fixes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True)
class AugmentSpec:
    """Random crop with zero padding plus optional horizontal flip.

    crop_padding: zeros added on every side before cropping back to the original size (CIFAR 4, MNIST-like 2).
    flip: flip each image horizontally with probability 1/2.
    """

    crop_padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"crop_padding={self.crop_padding!r}; expected an int >= 0")


def sample_crop_flip(
    n: int, *, spec: AugmentSpec, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw crop offsets (n, 2) int64 in [0, 2*pad] (row, col) and flip flags (n,) bool.

    Drawn for a whole epoch at once so a device copy happens once per epoch, not once per batch.
    """
    offsets = torch.randint(0, 2 * spec.crop_padding + 1, (n, 2), generator=generator)  # (n, 2)
    flips = torch.rand(n, generator=generator) < 0.5  # (n,)
    if not spec.flip:
        flips = torch.zeros_like(flips)
    return offsets, flips


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, *, pad: int) -> torch.Tensor:
    """Pad `images` (B, C, H, W) with zeros by `pad`, crop HxW at `offsets` (B, 2), mirror where `flips` (B,).

    Every output pixel is a pixel of the padded source (a pure crop/flip, no interpolation). Works for any dtype.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p), zero fill like torchvision RandomCrop
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=images.device)  # (B, W)
    # A horizontal flip after cropping reads the crop's columns right to left.
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 (x/255 - mean) / std with per-channel mean, std (C,)."""
    x = images.float().div_(255.0)
    return x.sub_(mean[:, None, None]).div_(std[:, None, None])
