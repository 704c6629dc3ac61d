"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60k/10k 28x28 grey images, 10 classes; the project's default.

The four standard IDX files are read directly (`data.idx`), gzipped or not, from the first folder that holds
all four: <root>/fashion-mnist, <root>/FashionMNIST/raw (torchvision's layout), <root> itself, then (for the
config's default root only, see `find_fashion_mnist`) system copies such as the Debian package
`dataset-fashion-mnist`. The folder read is kept as `DataBundle.source` (logged and recorded by the trainer). Training augmentation: random 28x28 crop of the image padded by 2, plus
horizontal flip (the CIFAR recipe scaled to 28 px); inputs normalised with the training-set mean/std.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.augment import AugmentSpec
from data.bundle import DataBundle
from data.checks import check_int, check_ints, check_optional_int
from data.idx import read_idx
from data.loaders import in_memory_bundle

NAME = "fashion_mnist"
NUM_CLASSES = 10
# Mean/std of the 60k training pixels scaled to [0, 1] (tests recompute them from the real files).
MEAN = (0.2860,)
STD = (0.3530,)
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def root_folders(root: str | Path) -> tuple[Path, ...]:
    """The folders under `root` that may hold the four files, in search order."""
    root = Path(root)
    return root / "fashion-mnist", root / "FashionMNIST" / "raw", root


def locate_fashion_mnist(root: str | Path, *, system_dirs: tuple[Path, ...] = SYSTEM_DIRS) -> dict[str, Path]:
    """Paths of the four IDX files in the first folder that holds all of them: `root_folders(root)`, then
    `system_dirs`.

    Raises FileNotFoundError (one line, naming every folder searched) when none does.
    """
    candidates = (*root_folders(root), *system_dirs)
    for folder in candidates:
        found = {key: _find_file(folder, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files ({', '.join(FILES.values())}, each may end in .gz) not found in any of: "
        f"{searched}; run `make data` or set DATA_ROOT to a folder containing fashion-mnist/ with the four files"
    )


def find_fashion_mnist(root: str | Path, *, default_root: str | Path | None = None) -> dict[str, Path]:
    """The four IDX files for `data.root=root`, searched according to who chose that root.

    The config's default root (`root: ${data_root}`, repeated as `default_root: ${data_root}` so that the two can
    be compared) also searches the system copies: a fresh checkout trains without `make data`. A root set by hand
    (`data.root=/my/folder`) is searched alone and is an error without the files: whoever typed a folder expects
    it to be read, and a silent fallback would leave config.yaml naming a folder the run never read (issue 27).
    Without `default_root` (a call from Python) `root` is searched like the default root.
    """
    if default_root is None or Path(root) == Path(default_root):
        return locate_fashion_mnist(root)
    try:
        return locate_fashion_mnist(root, system_dirs=())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"data.root={root} holds no Fashion-MNIST: none of {', '.join(map(str, root_folders(root)))} has all of "
            f"{', '.join(FILES.values())} (each may end in .gz); point data.root at the folder holding them, or "
            f"drop data.root=... to search DATA_ROOT and {', '.join(map(str, SYSTEM_DIRS))}"
        ) from None


def load_fashion_mnist(files: dict[str, Path]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read the four files: train images (60000, 1, 28, 28) uint8, labels (60000,) int64, and the same for test."""
    out = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"])
        labels = read_idx(files[f"{split}_labels"])
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}; "
                f"expected (N, 28, 28) and (N,)"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise ValueError(f"Fashion-MNIST {split} labels span {labels.min()}..{labels.max()}; expected 0..9")
        out.append(torch.from_numpy(images.astype(np.uint8, copy=False)).unsqueeze(1))  # (N, 1, 28, 28)
        out.append(torch.from_numpy(labels.astype(np.int64)))  # (N,)
    return out[0], out[1], out[2], out[3]


def read_fashion_mnist(
    root: str | Path, *, default_root: str | Path | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], str]:
    """`load_fashion_mnist` of the files `find_fashion_mnist` picks, and the source read: the folder (absolute), with
    a note when the default root had no files and a system copy was read. The trainer logs it and keeps it in
    summary.json once the run is assembled (logging here would open train.log in a folder that a later refusal
    must leave empty)."""
    files = find_fashion_mnist(root, default_root=default_root)
    tensors = load_fashion_mnist(files)
    folder = files["train_images"].parent
    fallback = "" if folder in root_folders(root) else f" (data.root={root} had no IDX files)"
    return tensors, f"{folder.absolute()}{fallback}"


def build(
    *,
    root: str | Path,
    default_root: str | Path | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 512,
    num_workers: int = 0,
    seed: int = 0,
    train_subset: int | None = None,
    augment: bool = True,
    device: str = "cpu",
) -> DataBundle:
    """Fashion-MNIST bundle. `default_root`: see `find_fashion_mnist`. `num_workers` is accepted for a uniform
    config but unused: batches are built in-process by one tensor gather, which beats worker processes for a
    dataset this small."""
    check_ints(batch_size=batch_size, eval_batch_size=eval_batch_size)
    check_int("num_workers", num_workers, minimum=0)
    check_optional_int("train_subset", train_subset)  # its upper bound is checked once the files are read
    (train_x, train_y, test_x, test_y), source = read_fashion_mnist(root, default_root=default_root)
    return in_memory_bundle(
        NAME, (train_x, train_y), (test_x, test_y), mean=MEAN, std=STD, batch_size=batch_size,
        eval_batch_size=eval_batch_size, seed=seed, train_subset=train_subset, device=device, num_classes=NUM_CLASSES,
        augment=AugmentSpec(crop_padding=2, flip=True) if augment else None, source=source,
    )
