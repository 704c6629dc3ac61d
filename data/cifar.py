"""CIFAR-10 / CIFAR-100 (Krizhevsky 2009) from torchvision's on-disk pickle layout, held in memory as uint8.

Layout read (exactly what `torchvision.datasets.CIFAR10/100(download=...)` leaves on disk):
  <root>/cifar-10-batches-py/{data_batch_1..5, test_batch}   dicts with b"data" (N, 3072) uint8, b"labels"
  <root>/cifar-100-python/{train, test}                      dicts with b"data", b"fine_labels"
We unpickle them directly instead of going through torchvision, whose md5 check would reject anything but the
official archive. Augmentation is the recipe of He et al. 2016 used by the LBT official code: random 32x32 crop of
the image zero-padded by 4, plus horizontal flip. Normalisation uses the training-set per-channel mean/std
(the LBT official code uses the ImageNet mean/std instead).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.augment import AugmentSpec
from data.bundle import DataBundle
from data.checks import check_int, check_ints, check_optional_int
from data.loaders import in_memory_bundle

# Per-channel mean/std of the 50k training images in [0, 1].
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _unpickle(path: Path) -> dict:
    """One pickled batch. A cut-short or foreign file fails in one of many ways (UnpicklingError, EOFError,
    ValueError, KeyError, ...) whose messages name no file, hence the broad except: it becomes a one-line
    ValueError naming the file, which the trainer reports as bad data (exit 2) instead of a traceback."""
    with open(path, "rb") as f:
        try:
            entry = pickle.load(f, encoding="bytes")
        except Exception as e:
            raise ValueError(f"{path} is cut short or not a CIFAR pickle ({type(e).__name__}: {e}): re-download "
                             f"it") from e
    if not isinstance(entry, dict):
        raise ValueError(f"{path} holds a pickled {type(entry).__name__}, not a CIFAR batch dict")
    return entry


def read_cifar_batches(folder: Path, files: list[str], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate pickled CIFAR batches: images (N, 3, 32, 32) uint8, labels (N,) int64."""
    images, labels = [], []
    for name in files:
        entry = _unpickle(folder / name)
        if b"data" not in entry or label_key not in entry:
            raise ValueError(f"{folder / name} lacks b'data' or {label_key!r}; is it a CIFAR python-format batch?")
        pixels, targets = np.asarray(entry[b"data"], dtype=np.uint8), np.asarray(entry[label_key], dtype=np.int64)
        if targets.ndim != 1 or pixels.size != 3072 * len(targets):
            raise ValueError(f"{folder / name} holds {pixels.size} pixel bytes for {targets.size} labels; "
                             f"expected 3072 (3x32x32) per label")
        images.append(pixels.reshape(-1, 3, 32, 32))  # rows are R,G,B planes
        labels.append(targets)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _locate(root: str | Path, layout: "CifarLayout") -> Path:
    path = Path(root) / layout.folder
    files = [*layout.train_files, *layout.test_files]
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        # `make data` fetches Fashion-MNIST only; torchvision's downloader writes exactly this layout.
        raise FileNotFoundError(
            f"{layout.name} not found: {path / missing[0]} is missing ({len(missing)} of the python-version files "
            f"{', '.join(files)} in {path}); python -c \"import torchvision; torchvision.datasets."
            f"{layout.torchvision_class}('{Path(root)}', download=True)\" downloads them there, or untar "
            f"{layout.archive} from https://www.cs.toronto.edu/~kriz/cifar.html into {Path(root)}, or set DATA_ROOT "
            f"(or data.root) to the folder holding {layout.folder}/"
        )
    return path


@dataclass(frozen=True, kw_only=True)
class CifarLayout:
    """Where one CIFAR variant lives on disk and how its labels are stored."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    archive: str  # the official python-version tarball, which unpacks to `folder`
    torchvision_class: str  # the torchvision.datasets class whose download=True writes this layout


# The two variants differ in nothing but these facts, so `num_classes` picks the layout.
LAYOUTS = {
    10: CifarLayout(
        name="cifar10", folder="cifar-10-batches-py", train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",), label_key=b"labels", mean=CIFAR10_MEAN, std=CIFAR10_STD,
        archive="cifar-10-python.tar.gz", torchvision_class="CIFAR10",
    ),
    100: CifarLayout(
        name="cifar100", folder="cifar-100-python", train_files=("train",), test_files=("test",),
        label_key=b"fine_labels", mean=CIFAR100_MEAN, std=CIFAR100_STD,
        archive="cifar-100-python.tar.gz", torchvision_class="CIFAR100",
    ),
}


def build(
    *,
    root: str | Path,
    num_classes: int = 10,
    batch_size: int = 128,
    eval_batch_size: int = 512,
    num_workers: int = 0,
    seed: int = 0,
    train_subset: int | None = None,
    augment: bool = True,
    device: str = "cpu",
) -> DataBundle:
    """CIFAR-10 (num_classes=10) or CIFAR-100 with fine labels (num_classes=100) bundle.

    `num_workers` is accepted for a uniform config but unused: batches are one in-process tensor gather.
    """
    if num_classes not in LAYOUTS:
        raise ValueError(f"data.num_classes={num_classes!r} is not a CIFAR variant: use 10 or 100")
    check_ints(batch_size=batch_size, eval_batch_size=eval_batch_size)
    check_int("num_workers", num_workers, minimum=0)
    check_optional_int("train_subset", train_subset)  # its upper bound is checked once the files are read
    layout = LAYOUTS[num_classes]
    path = _locate(root, layout)
    train_x, train_y = read_cifar_batches(path, list(layout.train_files), layout.label_key)
    test_x, test_y = read_cifar_batches(path, list(layout.test_files), layout.label_key)
    for split, y in (("train", train_y), ("test", test_y)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"{layout.name} {split} labels span {int(y.min())}..{int(y.max())}; expected 0..{num_classes - 1}"
            )
    return in_memory_bundle(
        layout.name, (train_x, train_y), (test_x, test_y), mean=layout.mean, std=layout.std, batch_size=batch_size,
        eval_batch_size=eval_batch_size, seed=seed, train_subset=train_subset, device=device, num_classes=num_classes,
        augment=AugmentSpec(crop_padding=4, flip=True) if augment else None, source=str(path.absolute()),
    )
