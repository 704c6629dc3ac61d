"""A small random-but-learnable image dataset for tests and smoke runs; needs no files.

Each class owns a smooth random template (a coarse 4x4 grid upsampled to the image size, made left-right
symmetric so the flip augmentation keeps it); a sample is its class template plus Gaussian pixel noise, stored
as uint8 like the real datasets so it goes through the same `InMemoryLoader` and batched augmentation.
The images depend only on `data_seed`, so changing the training `seed` reshuffles but never changes the data.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data.augment import AugmentSpec
from data.bundle import DataBundle
from data.checks import check_int, check_ints, check_optional_int
from data.loaders import in_memory_bundle


def make_synthetic(
    *, num_samples: int, num_classes: int, in_channels: int, image_size: int, noise: float, generator: torch.Generator,
    templates: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `num_samples` images (N, C, S, S) uint8 and balanced labels (N,) int64 from class `templates`."""
    labels = torch.arange(num_samples) % num_classes  # balanced classes
    labels = labels[torch.randperm(num_samples, generator=generator)]
    pixels = templates[labels] + noise * torch.randn(num_samples, in_channels, image_size, image_size, generator=generator)
    return pixels.mul(255).round().clamp(0, 255).to(torch.uint8), labels


def class_templates(*, num_classes: int, in_channels: int, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth, left-right symmetric templates (K, C, S, S) with values in [0.2, 0.8]."""
    coarse = torch.rand(num_classes, in_channels, 4, 4, generator=generator)  # (K, C, 4, 4)
    coarse = 0.5 * (coarse + coarse.flip(-1))  # symmetric, so a horizontal flip keeps the class pattern
    smooth = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return 0.2 + 0.6 * smooth


def build(
    *,
    root: str | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 512,
    num_workers: int = 0,
    seed: int = 0,
    train_subset: int | None = None,
    augment: bool = True,
    device: str = "cpu",
    num_train: int = 512,
    num_test: int = 256,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 16,
    noise: float = 0.15,
    data_seed: int = 0,
) -> DataBundle:
    """Synthetic bundle. `root` and `num_workers` are accepted for a uniform data config and unused."""
    check_ints(num_train=num_train, num_test=num_test, num_classes=num_classes, in_channels=in_channels,
               image_size=image_size, batch_size=batch_size, eval_batch_size=eval_batch_size)
    check_int("num_workers", num_workers, minimum=0)
    check_optional_int("train_subset", train_subset, maximum=num_train)
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"data.noise={noise!r} is invalid: use a number >= 0")
    generator = torch.Generator().manual_seed(data_seed)
    templates = class_templates(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, generator=generator
    )
    shape = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, noise=noise,
                 generator=generator, templates=templates)
    train_x, train_y = make_synthetic(num_samples=num_train, **shape)
    test_x, test_y = make_synthetic(num_samples=num_test, **shape)
    # Normalise with the statistics of the generated training set, as for the real datasets.
    scaled = train_x.float().div(255)
    mean = scaled.mean(dim=(0, 2, 3)).tolist()
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    return in_memory_bundle(
        "synthetic", (train_x, train_y), (test_x, test_y), mean=mean, std=std, batch_size=batch_size,
        eval_batch_size=eval_batch_size, seed=seed, train_subset=train_subset, device=device, num_classes=num_classes,
        augment=AugmentSpec(crop_padding=max(1, image_size // 16), flip=True) if augment else None,
        source=f"synthetic (data_seed={data_seed}, generated in memory)",
    )
