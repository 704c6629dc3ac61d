"""ImageFolder bundle on generated PNGs in the real train/val/<class>/ layout; per-(seed, epoch) determinism,
DDP shards and mid-epoch resume."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data import image_folder
from data.image_folder import random_resized_crop_box
from data.loaders import epoch_seed
from sharding import check_resume, check_test_shards, check_train_shards, epoch_samples

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


def test_train_order_is_the_one_a_seeded_shuffling_dataloader_gave(root):
    # Runs started before the loader cut its own batches keep their (seed, epoch) orders.
    loader = _build(root, augment=False).train
    reference = DataLoader(loader.dataset, batch_size=4, shuffle=True,
                           generator=torch.Generator().manual_seed(epoch_seed(5, 3)))
    assert all(torch.equal(ya, yb) and torch.equal(xa, xb)
               for (xa, ya), (xb, yb) in zip(_epoch(loader, 3), reference, strict=True))


def _shard(loader, rank, world):
    loader.set_shard(rank, world)
    return loader


@pytest.mark.parametrize("train_subset", [None, 7])  # 12 = 3 x 4 samples; 7 = 4 + 3 (padded by one sample)
def test_two_train_shards_together_are_the_one_process_double_batch(root, train_subset):
    single = epoch_samples(_build(root, batch_size=4, train_subset=train_subset).train, epoch=2)
    ranks = [epoch_samples(_shard(_build(root, batch_size=2, train_subset=train_subset).train, r, 2), epoch=2)
             for r in range(2)]
    check_train_shards(single, ranks, world=2)


def test_two_val_shards_are_disjoint_and_complete(root):
    single = epoch_samples(_build(root, eval_batch_size=4).test, epoch=0)
    ranks = [epoch_samples(_shard(_build(root, eval_batch_size=4).test, r, 2), epoch=0) for r in range(2)]
    check_test_shards(single, ranks)


def test_resume_mid_epoch_skips_batches_without_decoding_them(root):
    check_resume(lambda: _shard(_build(root).train, 1, 2), epoch=1, start_batch=1)
    loader = _build(root).train  # 12 images, 3 batches of 4
    decoded = []
    read = loader.dataset.folder.loader
    loader.dataset.folder.loader = lambda path: decoded.append(path) or read(path)
    assert len(epoch_samples(loader, epoch=1, start_batch=2)) == 1 and len(loader) == 3
    assert len(decoded) == 4  # only the last batch's images were read
