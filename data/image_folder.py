"""ImageNet-style class folders (<root>/<folder>/{train,val}/<class>/<image>) through a torch DataLoader.

Too large for memory, so images are decoded per sample in worker processes. Training transform: the standard
ImageNet recipe (Szegedy et al. 2015 / torchvision reference) RandomResizedCrop(224, scale (0.08, 1)) + flip;
evaluation: Resize(256) + CenterCrop(224). Normalised with the ImageNet mean/std.

Determinism: the crop/flip of sample i in epoch e is drawn from a generator seeded by (seed, e, i), and the
shuffle from one seeded by (seed, e). Neither depends on the global RNG, worker count, worker seeding or DDP rank,
so a resumed run sees the same batches as an uninterrupted one. Batches are index lists from data/shard.py, so
DDP shards and a mid-epoch resume never decode an image they skip.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from data.bundle import DataBundle
from data.checks import check_int, check_ints
from data.loaders import epoch_seed, first_n
from data.shard import PlannedLoader, ShardBatchSampler, ShardPlan

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_crop_box(
    height: int, width: int, *, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop box, torchvision's algorithm drawn from `generator`.

    Ten tries for a box of random area fraction in `scale` and log-uniform aspect in `ratio`; else a centre crop
    clamped to `ratio` (as torchvision.transforms.RandomResizedCrop.get_params).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class SeededImageDataset(Dataset):
    """Wraps an ImageFolder; returns (float32 (3, S, S) normalised, int label) with per-(seed, epoch, index) RNG.

    augment=False applies the evaluation transform (Resize + CenterCrop).
    """

    def __init__(self, folder: ImageFolder, *, augment: bool, seed: int, image_size: int, resize_size: int) -> None:
        self.folder = folder
        self.augment = augment
        self.seed = seed
        self.epoch = 0  # set by the loader before each iteration; workers get a fresh copy every epoch
        self.image_size = image_size
        self.resize_size = resize_size
        self.mean = list(IMAGENET_MEAN)
        self.std = list(IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.folder.samples[index]
        image = TF.to_image(self.folder.loader(path)).as_subclass(torch.Tensor)  # (3, H, W) uint8
        if self.augment:
            generator = torch.Generator().manual_seed(epoch_seed(epoch_seed(self.seed, self.epoch), index))
            top, left, h, w = random_resized_crop_box(
                image.shape[-2], image.shape[-1], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=generator
            )
            image = TF.resized_crop(image, top, left, h, w, [self.image_size, self.image_size], antialias=True)
            if float(torch.rand(1, generator=generator)) < 0.5:
                image = TF.horizontal_flip(image)
        else:
            image = TF.resize(image, [self.resize_size], antialias=True)  # shorter side -> resize_size
            image = TF.center_crop(image, [self.image_size, self.image_size])
        x = TF.to_dtype(image, torch.float32, scale=True)
        return TF.normalize(x, self.mean, self.std), label


class FolderLoader(PlannedLoader):
    """DataLoader over a SeededImageDataset; the epoch's order is a randperm seeded by (seed, epoch).

    `indices` (None = all) is the subset read, in the order the epoch's permutation refers to.
    pad_shards: see data/shard.py (True for training).
    """

    def __init__(self, dataset: SeededImageDataset, *, indices: list[int] | None, batch_size: int, shuffle: bool,
                 num_workers: int, seed: int, pad_shards: bool) -> None:
        check_int("num_workers", num_workers, minimum=0)
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.plan = ShardPlan(len(self.indices), batch_size, pad=pad_shards)

    def epoch_order(self, epoch: int) -> list[int]:
        """Dataset indices in the order of `epoch`."""
        if not self.shuffle:
            return self.indices
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        # The draws of DataLoader(shuffle=True, generator=generator), which this loader used before it cut its own
        # batches: the iterator's base seed for workers, then the RandomSampler's randperm. Keeping them keeps
        # every (seed, epoch) order of earlier runs.
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return [self.indices[i] for i in torch.randperm(len(self.indices), generator=generator).tolist()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.dataset.epoch = self.epoch  # workers are started per pass (not persistent) and copy the new epoch
        loader = DataLoader(
            self.dataset, batch_sampler=ShardBatchSampler(self.plan, self.epoch_order),
            num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
        )
        return iter(loader)


def build(
    *,
    root: str | Path,
    folder: str = "imagenet",
    batch_size: int = 256,
    eval_batch_size: int = 512,
    num_workers: int = 8,
    seed: int = 0,
    train_subset: int | None = None,
    augment: bool = True,
    image_size: int = 224,
    resize_size: int = 256,
) -> DataBundle:
    """Bundle over <root>/<folder>/train and <root>/<folder>/val (class subfolders with matching names).

    `train_subset` keeps N evenly spaced training samples: ImageFolder sorts samples by class, so the first N
    would hold only the first classes.
    """
    check_ints(batch_size=batch_size, eval_batch_size=eval_batch_size, image_size=image_size, resize_size=resize_size)
    check_int("num_workers", num_workers, minimum=0)
    base = Path(root) / folder
    for split in ("train", "val"):
        if not (base / split).is_dir():
            raise FileNotFoundError(
                f"ImageNet-style folder {base / split} not found; expected {base}/{{train,val}}/<class>/<image> "
                f"with the same class folders in both: download ILSVRC2012 train and val from image-net.org, sort "
                f"val into class folders (valprep.sh of the PyTorch ImageNet example), then set DATA_ROOT to the "
                f"folder holding {folder}/ (or data.root, data.folder)"
            )
    train_folder, val_folder = ImageFolder(str(base / "train")), ImageFolder(str(base / "val"))
    if train_folder.classes != val_folder.classes:
        raise ValueError(
            f"{base}: val has {len(val_folder.classes)} classes and train {len(train_folder.classes)}, "
            f"or their names differ; both splits need the same class folders"
        )
    n_total = len(train_folder)
    n = first_n(n_total, train_subset)
    indices = None if n == n_total else torch.linspace(0, n_total - 1, n).round().long().tolist()
    kw = dict(seed=seed, image_size=image_size, resize_size=resize_size)
    train_set = SeededImageDataset(train_folder, augment=augment, **kw)  # augment=False: the val transform
    val_set = SeededImageDataset(val_folder, augment=False, **kw)
    train = FolderLoader(train_set, indices=indices, batch_size=batch_size, shuffle=True,
                         num_workers=num_workers, seed=seed, pad_shards=True)
    test = FolderLoader(val_set, indices=None, batch_size=eval_batch_size, shuffle=False,
                        num_workers=num_workers, seed=seed, pad_shards=False)
    return DataBundle(
        name=folder, train=train, test=test, source=str(base.absolute()),
        model_kwargs={"num_classes": len(train_folder.classes), "in_channels": 3},
    )
