"""Offline super-resolution data: the photographs shipped inside scikit-image (no download, no dataset folder).

Training patches come from one list of images and evaluation uses a disjoint list; LR images are made by
antialiased bicubic downsampling of the mod-cropped HR image (data/sr_images.py). Grayscale images are
replicated to RGB. This is a smoke-test / CPU-scale stand-in for DIV2K + Set5, not a benchmark: numbers on it
are not comparable with published tables.
"""
from __future__ import annotations

from typing import Sequence

from data.bundle import DataBundle
from data.checks import check_int, check_ints
from data.sr_images import SRPairs, to_rgb_uint8
from data.sr_patches import SRPatchDataset, SRTestLoader, SRTrainLoader
from runtime.extras import MissingExtra

try:
    import skimage.data
except ModuleNotFoundError as e:
    raise MissingExtra("data=skimage_sr", e.name, "sr") from e

#: Images bundled in the scikit-image wheel itself (loading them never downloads). `cat` is `chelsea`.
SHIPPED = (
    "astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins", "colorwheel", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket", "text",
)
TRAIN_IMAGES = (
    "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "brick", "grass", "gravel",
    "moon", "text",
)
TEST_IMAGES = ("chelsea", "coffee", "camera", "coins")


def load_skimage_images(names: Sequence[str]) -> list:
    """(3, H, W) uint8 RGB for each named scikit-image picture."""
    unknown = [n for n in names if n not in SHIPPED]
    if unknown:
        raise ValueError(f"scikit-image images {unknown} are not offline photographs; choose from {list(SHIPPED)}")
    return [to_rgb_uint8(getattr(skimage.data, n)(), name=n) for n in names]


def build(
    *,
    scale: int = 2,
    lr_patch_size: int = 24,
    batch_size: int = 16,
    patches_per_epoch: int = 512,
    train_images: Sequence[str] = TRAIN_IMAGES,
    test_images: Sequence[str] = TEST_IMAGES,
    augment: bool = True,
    seed: int = 0,
    num_workers: int = 0,
) -> DataBundle:
    """Bundle of random training patches and whole test images, both float32 in [0, 1].

    train: (lr (B, 3, p, p), hr (B, 3, s*p, s*p)), p = lr_patch_size; test: one (1, 3, h, w) image at a time.
    """
    check_int("scale", scale, minimum=2)
    check_ints(lr_patch_size=lr_patch_size, batch_size=batch_size, patches_per_epoch=patches_per_epoch)
    check_int("num_workers", num_workers, minimum=0)
    if batch_size > patches_per_epoch:
        raise ValueError(f"data.batch_size={batch_size} is invalid: use an integer in "
                         f"1..data.patches_per_epoch={patches_per_epoch}")
    train_images, test_images = list(train_images), list(test_images)
    shared = sorted(set(train_images) & set(test_images))
    if shared:
        raise ValueError(f"images {shared} are in both train_images and test_images; the two lists must be disjoint")
    if not train_images or not test_images:
        raise ValueError(f"train_images={train_images} / test_images={test_images}; both need at least one image")
    train_pairs, test_pairs = (
        SRPairs([(im, None) for im in load_skimage_images(names)], scale=scale, preload=True, names=names)
        for names in (train_images, test_images)
    )
    patches = SRPatchDataset(
        train_pairs, lr_patch_size=lr_patch_size, patches_per_epoch=patches_per_epoch, augment=augment, seed=seed
    )
    return DataBundle(
        name=f"skimage_sr_x{scale}",
        train=SRTrainLoader(patches, batch_size=batch_size, num_workers=num_workers),
        test=SRTestLoader(test_pairs),
        model_kwargs={"scale": scale, "in_channels": 3},
        source=f"scikit-image {skimage.__version__} skimage.data (images shipped in the package)",
    )
