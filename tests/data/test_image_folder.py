"""ImageFolder bundle on generated PNGs in the real train/val/<class>/ layout; per-(seed, epoch) determinism."""
import numpy as np
import pytest
import torch
from PIL import Image

from data import image_folder
from data.image_folder import random_resized_crop_box

CLASSES = ("ant", "bee", "cat")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for k, name in enumerate(CLASSES):
            (root / "imagenet" / split / name).mkdir(parents=True)
            for i in range(per_class):
                h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "imagenet" / split / name / f"{i}.png")
    return root


def _build(root, **kw):
    args = dict(root=root, batch_size=4, eval_batch_size=4, num_workers=0, image_size=24, resize_size=28, seed=5)
    return image_folder.build(**{**args, **kw})


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_bundle_shapes_classes_and_fixed_val_order(root):
    bundle = _build(root)
    assert bundle.model_kwargs == {"num_classes": 3, "in_channels": 3}
    assert len(bundle.train) == 3 and len(bundle.test) == 2
    x, y = next(iter(bundle.train))
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    val_labels = torch.cat([y for _, y in bundle.test]).tolist()
    assert val_labels == [0, 0, 1, 1, 2, 2]


def test_same_seed_and_epoch_reproduce_batches_regardless_of_workers(root):
    a = _epoch(_build(root).train, 3)
    b = _epoch(_build(root, num_workers=2).train, 3)  # worker processes must not change the draws
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    c = _epoch(_build(root).train, 4)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_train_subset_is_spread_over_all_classes(root):
    bundle = _build(root, train_subset=3, batch_size=3, augment=False)
    (_, y), = list(bundle.train)
    assert sorted(y.tolist()) == [0, 1, 2]


def test_random_resized_crop_boxes_stay_inside_the_image():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(40, 70, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), generator=generator)
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 70 and h > 0 and w > 0


def test_missing_split_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train") as err:
        image_folder.build(root=tmp_path)
    assert "\n" not in str(err.value)
