"""DIV2K and the SR benchmark sets (Set5, Set14, B100, Urban100, Manga109) in their usual on-disk layouts.

Layouts read (as distributed by the DIV2K site and used by EDSR-PyTorch / BasicSR):
  <div2k_root>/DIV2K_{train,valid}_HR/0001.png
  <div2k_root>/DIV2K_{train,valid}_LR_bicubic/X{s}/0001x{s}.png
  <benchmark_root>/<Set5|Set14|B100|Urban100|...>/HR/baby.png
  <benchmark_root>/<name>/LR_bicubic/X{s}/babyx{s}.png
When an LR folder is absent, LR images are made from the HR ones by antialiased bicubic downsampling
(data/sr_images.py), which approximates but does not reproduce MATLAB's imresize: use the official LR files
to compare with published PSNR. An LR folder that exists but lacks a file is an error, never a silent mix.

Training is always on DIV2K train (800 images, EDSR Sec. 4.1); the test set is DIV2K valid (optionally its
first `test_limit` images, EDSR validates on 801-810) or one benchmark set.
"""
from __future__ import annotations

from pathlib import Path

from data.bundle import DataBundle
from data.checks import check_int, check_ints, check_optional_int
from data.sr_images import ImageSource, SRPairs
from data.sr_patches import SRPatchDataset, SRTestLoader, SRTrainLoader

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"  # EDSR authors' Set5/Set14/B100/Urban100 pack


def pair_sources(hr_dir: Path, lr_dir: Path, scale: int) -> list[ImageSource]:
    """(HR path, LR path or None) per HR image, sorted by name; LR files are `<stem>x<scale><suffix>`."""
    hr_files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not hr_files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {hr_dir}; is the folder unpacked?")
    if not lr_dir.is_dir():
        return [(p, None) for p in hr_files]  # LR made by bicubic downsampling
    sources = [(p, lr_dir / f"{p.stem}x{scale}{p.suffix}") for p in hr_files]
    missing = [str(lr) for _, lr in sources if not lr.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} LR files missing in {lr_dir} (first: {missing[0]}); complete it or delete the folder "
            "to generate LR by bicubic downsampling"
        )
    return sources


def div2k_sources(root: str | Path, *, split: str, scale: int) -> list[ImageSource]:
    """DIV2K `split` ("train" or "valid") at `scale`, bicubic degradation track."""
    if split not in ("train", "valid"):
        raise ValueError(f"DIV2K split={split!r}; expected 'train' or 'valid'")
    hr_dir = Path(root) / f"DIV2K_{split}_HR"
    if not hr_dir.is_dir():
        raise FileNotFoundError(
            f"DIV2K folder {hr_dir} not found; expected {hr_dir}/0001.png (optional LR files "
            f"{Path(root)}/DIV2K_{split}_LR_bicubic/X{scale}/0001x{scale}.png): download DIV2K_{split}_HR.zip (and "
            f"DIV2K_{split}_LR_bicubic_X{scale}.zip) from the DIV2K page {DIV2K_URL} and unzip into {Path(root)}, "
            f"or set DATA_ROOT to the folder holding DIV2K/ (or data.root)"
        )
    return pair_sources(hr_dir, Path(root) / f"DIV2K_{split}_LR_bicubic" / f"X{scale}", scale)


def benchmark_sources(root: str | Path, *, name: str, scale: int) -> list[ImageSource]:
    """One benchmark set (e.g. "Set5") in the EDSR/BasicSR layout `<root>/<name>/HR`, `LR_bicubic/X<s>`."""
    hr_dir = Path(root) / name / "HR"
    if not hr_dir.is_dir():
        raise FileNotFoundError(
            f"benchmark folder {hr_dir} not found; expected {hr_dir}/<image>.png (optional LR files "
            f"{Path(root)}/{name}/LR_bicubic/X{scale}/<image>x{scale}.png): untar the EDSR benchmark pack "
            f"{BENCHMARK_URL} (Set5, Set14, B100, Urban100) so that {Path(root)}/{name}/HR exists, or set DATA_ROOT "
            f"to the folder holding benchmark/ (or data.benchmark_root)"
        )
    return pair_sources(hr_dir, Path(root) / name / "LR_bicubic" / f"X{scale}", scale)


def _first(sources: list[ImageSource], limit: int | None, what: str) -> list[ImageSource]:
    limit = check_optional_int(what, limit, maximum=len(sources))
    return sources if limit is None else sources[:limit]


def build(
    *,
    root: str | Path,
    scale: int = 2,
    test_set: str = "DIV2K_valid",
    benchmark_root: str | Path | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    lr_patch_size: int = 48,
    batch_size: int = 16,
    patches_per_epoch: int = 16000,
    augment: bool = True,
    preload: bool = True,
    seed: int = 0,
    num_workers: int = 0,
) -> DataBundle:
    """DIV2K-train patches; test on DIV2K valid (`test_set="DIV2K_valid"`) or a benchmark set under `benchmark_root`.

    Defaults are EDSR's: 48x48 LR patches, batch 16, 16000 patches (1000 steps) per epoch.
    `preload=False` decodes PNGs per patch (low memory); then use `num_workers` of 8 or more.
    """
    check_int("scale", scale, minimum=2)
    check_ints(lr_patch_size=lr_patch_size, batch_size=batch_size, patches_per_epoch=patches_per_epoch)
    check_int("num_workers", num_workers, minimum=0)
    check_optional_int("train_limit", train_limit)
    check_optional_int("test_limit", test_limit)
    if batch_size > patches_per_epoch:
        raise ValueError(f"data.batch_size={batch_size} is invalid: use an integer in "
                         f"1..data.patches_per_epoch={patches_per_epoch}")
    train = _first(div2k_sources(root, split="train", scale=scale), train_limit, "train_limit")
    if test_set == "DIV2K_valid":
        test = div2k_sources(root, split="valid", scale=scale)
    elif benchmark_root is None:
        raise ValueError(f"data.test_set={test_set!r} needs data.benchmark_root (the folder holding {test_set}/HR)")
    else:
        test = benchmark_sources(benchmark_root, name=test_set, scale=scale)
    test = _first(test, test_limit, "test_limit")
    patches = SRPatchDataset(
        SRPairs(train, scale=scale, preload=preload),
        lr_patch_size=lr_patch_size, patches_per_epoch=patches_per_epoch, augment=augment, seed=seed,
    )
    return DataBundle(
        name=f"div2k_x{scale}_{test_set}",
        train=SRTrainLoader(patches, batch_size=batch_size, num_workers=num_workers),
        test=SRTestLoader(SRPairs(test, scale=scale, preload=preload), num_workers=num_workers),
        model_kwargs={"scale": scale, "in_channels": 3},
        source=str(Path(root).absolute()) if test_set == "DIV2K_valid" else
        f"{Path(root).absolute()} (test: {(Path(benchmark_root) / test_set).absolute()})",
    )
