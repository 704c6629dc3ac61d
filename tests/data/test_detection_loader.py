"""DetectionLoader: order and flips depend only on (seed, epoch); flips move boxes with the pixels; batches stay lists;
DDP shards and a mid-epoch resume read exactly the single-process samples."""
import pytest
import torch

from data.detection_loader import DetectionLoader
from data.detection_transforms import hflip, make_target
from sharding import check_resume, check_test_shards, check_train_shards, epoch_samples


class _Tiles:
    """Image i is black with one white block; its box is that block, so a flip must move box and ink together."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        image = torch.zeros(3, 12, 16)
        image[:, 2:5, i:i + 3] = 1.0
        return image, make_target([[i, 2, i + 3, 5]], [i + 1])


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [(image, target) for images, targets in loader for image, target in zip(images, targets)]


def test_batches_are_lists_of_images_and_target_dicts():
    loader = DetectionLoader(_Tiles(), batch_size=4, shuffle=False, flip=False, seed=0, pad_shards=False)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 4
    assert targets[0]["boxes"].shape == (1, 4) and targets[0]["labels"].dtype == torch.int64


def test_order_and_flips_are_fixed_by_seed_and_epoch():
    loader = DetectionLoader(_Tiles(), batch_size=3, shuffle=True, flip=True, seed=7, pad_shards=True)
    assert len(loader) == 4
    first, again = _epoch(loader, 1), _epoch(loader, 1)
    labels = lambda samples: [int(t["labels"]) for _, t in samples]  # noqa: E731
    assert labels(first) == labels(again) and sorted(labels(first)) == list(range(1, 11))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert labels(first) != labels(_epoch(loader, 2))
    other_seed = DetectionLoader(_Tiles(), batch_size=3, shuffle=True, flip=True, seed=8, pad_shards=True)
    assert labels(first) != labels(_epoch(other_seed, 1))


def test_flipped_boxes_still_frame_the_ink():
    loader = DetectionLoader(_Tiles(), batch_size=10, shuffle=False, flip=True, seed=0, pad_shards=True)
    flipped = 0
    for image, target in _epoch(loader, 0):
        x0, y0, x1, y1 = target["boxes"][0].long().tolist()
        ink = image[0] > 0
        assert ink[y0:y1, x0:x1].all() and ink.sum() == (x1 - x0) * (y1 - y0)
        i = int(target["labels"]) - 1
        flipped += x0 != i
    assert 0 < flipped < 10  # about half of the samples are mirrored


def test_hflip_twice_is_the_identity():
    image, target = _Tiles()[4]
    back_image, back_target = hflip(*hflip(image, target))
    assert torch.equal(back_image, image) and torch.equal(back_target["boxes"], target["boxes"])


def _loader(batch_size, *, rank=0, world=1, train=True, drop_last=False):
    loader = DetectionLoader(_Tiles(), batch_size=batch_size, shuffle=train, flip=train, seed=7, pad_shards=train,
                             drop_last=drop_last)
    loader.set_shard(rank, world)
    return loader


@pytest.mark.parametrize("batch_size", [2, 3])  # 10 = 2 x 4 + 2 and 1 x 6 + 4: the tail split evenly
def test_two_train_shards_together_are_the_one_process_double_batch(batch_size):
    single = epoch_samples(_loader(2 * batch_size), epoch=5)
    check_train_shards(single, [epoch_samples(_loader(batch_size, rank=r, world=2), epoch=5) for r in range(2)], 2)


def test_three_train_shards_pad_the_tail_by_wrapping_round_the_order():
    # 10 = 1 x 9 + 1: the last global batch holds 1 sample and 2 padded ones, one per rank
    single = epoch_samples(_loader(9), epoch=5)
    check_train_shards(single, [epoch_samples(_loader(3, rank=r, world=3), epoch=5) for r in range(3)], 3)
    assert len({len(_loader(3, rank=r, world=3)) for r in range(3)}) == 1


def test_test_shards_are_disjoint_and_complete():
    single = epoch_samples(_loader(4, train=False), epoch=0)
    check_test_shards(single, [epoch_samples(_loader(4, rank=r, world=3, train=False), epoch=0) for r in range(3)])


@pytest.mark.parametrize("world, rank, drop_last", [(1, 0, False), (2, 1, False), (2, 0, True)])
def test_resume_mid_epoch_yields_the_uninterrupted_batches(world, rank, drop_last):
    check_resume(lambda: _loader(2, rank=rank, world=world, drop_last=drop_last), epoch=3, start_batch=1)
