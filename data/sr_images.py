"""Image pairs for super-resolution: reading, mod-crop, bicubic degradation, and an (LR, HR) pair store.

Every image is kept as uint8 (3, H, W) RGB until a batch is formed; grayscale images are replicated to three
channels so one model serves every set (the usual practice for Set14 / B100 grayscale images in EDSR/BasicSR).

Bicubic degradation (used when no LR file exists on disk) is `F.interpolate(mode="bicubic", antialias=True)`,
the PIL-style antialiased bicubic kernel (a = -0.5) that approximates MATLAB's `imresize`, which produced the
official DIV2K / benchmark LR files. It is close to, not bit-identical with, MATLAB: PSNR on generated LR
differs from published tables by a small amount, so ship the official LR files when comparing with papers.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

#: An HR image on disk or in memory, and its LR counterpart on disk or None (then made by bicubic downsampling).
ImageSource = tuple[Path | torch.Tensor, Path | torch.Tensor | None]


def to_rgb_uint8(array: np.ndarray | torch.Tensor, *, name: str) -> torch.Tensor:
    """(H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA uint8 -> (3, H, W) uint8 RGB (alpha dropped)."""
    image = torch.as_tensor(np.asarray(array))
    if image.dtype != torch.uint8 or image.dim() not in (2, 3) or (image.dim() == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(
            f"image {name!r} is {image.dtype} {tuple(image.shape)}; expected uint8 (H, W), (H, W, 3) or (H, W, 4)"
        )
    if image.dim() == 2:
        return image.unsqueeze(0).expand(3, -1, -1).contiguous()  # gray -> RGB by replication
    return image[:, :, :3].permute(2, 0, 1).contiguous()


def read_image(path: Path) -> torch.Tensor:
    """Decode a PNG/JPEG file to (3, H, W) uint8 RGB (gray files are expanded by the decoder).

    The decoder's RuntimeError for a damaged file names no file; it becomes a one-line ValueError naming it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found; check the dataset folder layout")
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as e:
        why = " ".join(str(e).split())  # one line
        raise ValueError(f"{path} is cut short or not an image ({why}): re-download it") from e


def mod_crop(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (C, H, W) at the bottom/right so H and W are multiples of `scale` (the standard SR protocol)."""
    h, w = hr.shape[-2] - hr.shape[-2] % scale, hr.shape[-1] - hr.shape[-1] % scale
    return hr[..., :h, :w]


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """(3, H, W) uint8 with H, W multiples of `scale` -> (3, H/scale, W/scale) uint8, antialiased bicubic."""
    lr = F.interpolate(
        hr.unsqueeze(0).float(), size=(hr.shape[-2] // scale, hr.shape[-1] // scale),
        mode="bicubic", antialias=True, align_corners=False,
    )  # (1, 3, h, w) float in [0, 255] up to ringing
    return lr.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)


def load_pair(source: ImageSource, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lr (3, h, w), hr (3, scale*h, scale*w)) uint8 for one source.

    With an LR file the HR image is cropped to exactly `scale` times the LR size (DIV2K x3 LR files are the floor
    of the HR size over 3); without one the HR image is mod-cropped and downsampled.
    """
    hr_src, lr_src = source
    hr = read_image(hr_src) if isinstance(hr_src, Path) else hr_src
    if lr_src is None:
        hr = mod_crop(hr, scale)
        if min(hr.shape[-2:]) < scale:
            name = hr_src if isinstance(hr_src, Path) else "in memory"
            raise ValueError(f"HR image ({name}) is {tuple(hr.shape[-2:])}, smaller than scale={scale}; drop it")
        return bicubic_downsample(hr, scale), hr
    lr = read_image(lr_src) if isinstance(lr_src, Path) else lr_src
    h, w = lr.shape[-2] * scale, lr.shape[-1] * scale
    if hr.shape[-2] < h or hr.shape[-1] < w or hr.shape[-2] - h >= scale or hr.shape[-1] - w >= scale:
        raise ValueError(
            f"LR {lr_src} is {tuple(lr.shape[-2:])} but HR {hr_src} is {tuple(hr.shape[-2:])}; "
            f"expected HR = {scale} x LR (up to {scale - 1} extra pixels): is the scale or the LR folder wrong?"
        )
    return lr, hr[..., :h, :w]


class SRPairs(Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """(LR, HR) uint8 pairs, decoded once up front (`preload=True`) or on every access (low memory).

    Preloading DIV2K train at x2 holds about 8.6 GB of uint8 and makes patch sampling free; lazy decoding
    costs one 2K PNG decode per patch, which needs DataLoader workers to keep a GPU busy.
    """

    def __init__(self, sources: Sequence[ImageSource], *, scale: int, preload: bool,
                 names: Sequence[str] | None = None) -> None:
        if not isinstance(scale, int) or scale < 2:
            raise ValueError(f"scale={scale!r}; expected an int >= 2 (2, 3 or 4 in the EDSR protocol)")
        if len(sources) == 0:
            raise ValueError("no images given; the image folder or the image list is empty")
        self.scale = scale
        self.sources = list(sources)
        # For error messages: the HR file, or the caller's name for an in-memory image.
        self.names = list(names) if names is not None else [
            str(hr) if isinstance(hr, Path) else f"image {i}" for i, (hr, _) in enumerate(self.sources)
        ]
        self.cache = None
        if preload:
            # Decoding runs in C++ without the GIL, so threads overlap it (800 DIV2K PNGs: minutes -> seconds).
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self.cache = list(pool.map(partial(load_pair, scale=scale), self.sources))

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            return self.cache[index]
        return load_pair(self.sources[index], self.scale)
