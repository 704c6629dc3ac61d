"""Fashion-MNIST detection: real Fashion-MNIST items pasted on a black canvas (the offline default).

Each canvas holds a few items at random positions and scales; an item's box is the tight bounding box of its
non-zero pixels after resizing, its label is class + 1 (0 is background in torchvision's detectors). Placement
rejects a position whose box overlaps an earlier one by more than `max_iou`, so items overlap only a little;
overlapping pixels take the brighter value. A canvas depends only on (seed, split, index): the set is the same
in every run, epoch and worker, and train / test canvases come from the FMNIST train / test images.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.bundle import DataBundle
from data.checks import check_int, check_ints
from data.detection_loader import detection_bundle
from data.detection_transforms import make_target
from data.fashion_mnist import read_fashion_mnist

NAME = "fashion_detection"
NUM_CLASSES = 10  # Fashion-MNIST classes; the detector gets NUM_CLASSES + 1 with background
_SPLIT_STREAM = {"train": 0, "test": 1}  # separate random streams, so test canvases never repeat train ones
_PLACEMENT_TRIES = 20


@dataclass(frozen=True, kw_only=True)
class CanvasSpec:
    """How canvases are drawn: size in pixels, objects per canvas, item scale (x 28 px), overlap limit."""

    size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_scale: float = 0.75
    max_scale: float = 2.0
    max_iou: float = 0.2

    def __post_init__(self):
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"objects per canvas {self.min_objects}..{self.max_objects} is invalid: use 1 <= min <= max")
        if not 0.0 < self.min_scale <= self.max_scale:
            raise ValueError(f"item scale {self.min_scale}..{self.max_scale} is invalid: use 0 < min <= max")
        if round(28 * self.max_scale) > self.size:
            raise ValueError(f"max_scale={self.max_scale} makes items ({round(28 * self.max_scale)} px) larger than "
                             f"the canvas ({self.size} px): lower max_scale or raise image_size")
        if not 0.0 <= self.max_iou <= 1.0:
            raise ValueError(f"max_iou={self.max_iou} is invalid: use a value in [0, 1]")


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with each of others (K, 4)."""
    lo = np.maximum(box[:2], others[:, :2])
    hi = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    return inter / (_area(box) + _area(others) - inter)


def _tight_box(item: np.ndarray) -> tuple[int, int, int, int] | None:
    """xyxy of the non-zero pixels of a (h, w) image, exclusive upper edges; None if it has no ink."""
    rows = np.flatnonzero(item.any(axis=1))
    cols = np.flatnonzero(item.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class FashionDetection(Dataset):
    """`num_images` canvases built from `items` (N, 28, 28) uint8 with `labels` (N,) in 0..9.

    Returns (image (3, S, S) float32 in [0, 1], {"boxes": (K, 4) xyxy, "labels": (K,) int64 in 1..10}).
    """

    def __init__(self, items: np.ndarray, labels: np.ndarray, *, num_images: int, canvas: CanvasSpec,
                 seed: int, split: str):
        if items.ndim != 3 or labels.shape != items.shape[:1]:
            raise ValueError(f"items {items.shape} / labels {labels.shape} invalid: expected (N, 28, 28) and (N,)")
        if num_images < 1:
            raise ValueError(f"num_images={num_images} is invalid: use a positive int")
        if split not in _SPLIT_STREAM:
            raise ValueError(f"split={split!r} is invalid: use one of {sorted(_SPLIT_STREAM)}")
        self.items, self.labels = items, labels
        self.num_images, self.canvas, self.seed, self.split = num_images, canvas, seed, split

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_images:
            raise IndexError(f"canvas index {index} out of range 0..{self.num_images - 1}")
        spec = self.canvas
        rng = np.random.default_rng([self.seed, _SPLIT_STREAM[self.split], index])
        canvas = np.zeros((spec.size, spec.size), dtype=np.uint8)
        boxes: list[np.ndarray] = []
        labels: list[int] = []
        for _ in range(rng.integers(spec.min_objects, spec.max_objects + 1)):
            pick = rng.integers(len(self.items))
            side = int(round(28 * rng.uniform(spec.min_scale, spec.max_scale)))
            item = np.asarray(Image.fromarray(self.items[pick]).resize((side, side), Image.BILINEAR))
            tight = _tight_box(item)
            if tight is None:
                continue
            for _ in range(_PLACEMENT_TRIES):
                x, y = rng.integers(0, spec.size - side + 1, size=2)
                box = np.array([x + tight[0], y + tight[1], x + tight[2], y + tight[3]], dtype=np.float32)
                if not boxes or _iou(box, np.stack(boxes)).max() <= spec.max_iou:
                    break
            else:
                continue  # no free spot: fewer objects on this canvas
            region = canvas[y:y + side, x:x + side]
            np.maximum(region, item, out=region)  # brighter pixel wins where items overlap
            boxes.append(box)
            labels.append(int(self.labels[pick]) + 1)
        # grey -> RGB in numpy: a tiny torch copy would wake torch's thread pool once per sample
        image = torch.from_numpy(np.repeat(canvas[None].astype(np.float32) / 255.0, 3, axis=0))  # (3, S, S)
        return image, make_target(boxes, labels)


def build(
    *,
    root: str | Path,
    default_root: str | Path | None = None,
    image_size: int = 128,
    num_train: int = 4096,
    num_test: int = 512,
    min_objects: int = 1,
    max_objects: int = 4,
    min_scale: float = 0.75,
    max_scale: float = 2.0,
    max_iou: float = 0.2,
    batch_size: int = 16,
    eval_batch_size: int = 32,
    num_workers: int = 0,
    flip: bool = True,
    seed: int = 0,
) -> DataBundle:
    """Fashion-MNIST detection bundle; model_kwargs carry num_classes (10 + background) and the canvas size.

    `root` / `default_root` find the IDX files as data=fashion_mnist does (data.fashion_mnist.find_fashion_mnist).
    """
    check_ints(image_size=image_size, num_train=num_train, num_test=num_test, batch_size=batch_size,
               eval_batch_size=eval_batch_size)
    check_int("num_workers", num_workers, minimum=0)
    canvas = CanvasSpec(size=image_size, min_objects=min_objects, max_objects=max_objects,
                        min_scale=min_scale, max_scale=max_scale, max_iou=max_iou)
    (train_x, train_y, test_x, test_y), source = read_fashion_mnist(root, default_root=default_root)
    train_set = FashionDetection(train_x[:, 0].numpy(), train_y.numpy(), num_images=num_train,
                                 canvas=canvas, seed=seed, split="train")
    test_set = FashionDetection(test_x[:, 0].numpy(), test_y.numpy(), num_images=num_test,
                                canvas=canvas, seed=seed, split="test")
    return detection_bundle(NAME, train_set, test_set, num_classes=NUM_CLASSES + 1, image_size=image_size,
                            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                            flip=flip, seed=seed, source=source)
