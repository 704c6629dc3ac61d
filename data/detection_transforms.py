"""Box-aware image transforms and the list-keeping collate for detection datasets.

Targets follow torchvision's detection convention: {"boxes": (N, 4) float32 xyxy in pixels of the returned
image, with x1/y1 exclusive (a box covering columns 3..7 is [3, ., 8, .]), "labels": (N,) int64, 0 = background}.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def empty_target() -> dict[str, torch.Tensor]:
    """An image with no objects: torchvision detectors accept (0, 4) boxes (all locations are background)."""
    return {"boxes": torch.zeros((0, 4), dtype=torch.float32), "labels": torch.zeros((0,), dtype=torch.int64)}


def make_target(boxes: list | np.ndarray, labels: list | np.ndarray) -> dict[str, torch.Tensor]:
    if len(boxes) == 0:
        return empty_target()
    return {
        "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1),
    }


def resize_square(image: Image.Image, target: dict[str, torch.Tensor], size: int):
    """Resize `image` to (size, size) and scale its boxes with it.

    A fixed square canvas (as in SSD) lets images batch without padding and makes the detector's own
    resize a no-op (its min_size = max_size = size); the aspect change is part of the augmentation-free
    geometry, identical for train and test. Returns ((3, size, size) float32 in [0, 1], target).
    """
    width, height = image.size
    image = image.convert("RGB").resize((size, size), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (S, S, 3)
    pixels = pixels.permute(2, 0, 1).float().div_(255.0)  # (3, S, S)
    scale = torch.tensor([size / width, size / height, size / width, size / height])
    boxes = (target["boxes"] * scale).clamp_(0.0, float(size))
    return pixels, {**target, "boxes": boxes}


def hflip(image: torch.Tensor, target: dict[str, torch.Tensor]):
    """Mirror a (C, H, W) image left-right; box x-edges swap: x0' = W - x1, x1' = W - x0."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def drop_degenerate(target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove boxes with zero width or height (torchvision's detectors reject them in training)."""
    boxes = target["boxes"]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {key: value[keep] for key, value in target.items()}


def collate_detection(batch):
    """Keep images and targets as lists: images of a batch may differ in size and targets in box count."""
    images, targets = zip(*batch)
    return list(images), list(targets)
