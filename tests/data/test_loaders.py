"""InMemoryLoader: batches depend only on (seed, epoch), cover the data once per epoch, and leave the global RNG;
DDP shards and a mid-epoch resume read exactly the single-process batches."""
import pytest
import torch

from data.augment import AugmentSpec
from data.loaders import InMemoryLoader, epoch_seed, first_n
from sharding import check_resume, check_test_shards, check_train_shards, epoch_samples

N = 50


def _loader(seed=0, shuffle=True, augment=AugmentSpec(crop_padding=2), batch_size=16):
    images = (torch.arange(N * 1 * 6 * 6) % 255 + 1).to(torch.uint8).reshape(N, 1, 6, 6)
    labels = torch.arange(N)  # label = sample index, so batches reveal the order
    return InMemoryLoader(images, labels, batch_size=batch_size, mean=(0.5,), std=(0.25,), shuffle=shuffle,
                          augment=augment, seed=seed, pad_shards=shuffle)


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_same_seed_and_epoch_give_identical_batches():
    a, b = _epoch(_loader(seed=3), 5), _epoch(_loader(seed=3), 5)
    assert len(a) == len(b) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_different_epochs_and_seeds_give_different_orders():
    order = lambda batches: torch.cat([y for _, y in batches])
    loader = _loader(seed=3)
    assert not torch.equal(order(_epoch(loader, 0)), order(_epoch(loader, 1)))
    assert not torch.equal(order(_epoch(_loader(seed=3), 0)), order(_epoch(_loader(seed=4), 0)))


def test_resumed_loader_matches_an_uninterrupted_one():
    running = _loader(seed=7)
    for epoch in range(3):
        seen = _epoch(running, epoch)
    resumed = _epoch(_loader(seed=7), 2)  # fresh process, jumps straight to epoch 2
    for (xa, ya), (xb, yb) in zip(seen, resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_each_epoch_visits_every_sample_once_and_keeps_the_last_partial_batch():
    batches = _epoch(_loader(), 1)
    assert [y.shape[0] for _, y in batches] == [16, 16, 16, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(N))


def test_test_loader_is_fixed_order_and_unaugmented():
    loader = _loader(shuffle=False, augment=None, batch_size=64)
    (x, y), = list(loader)
    assert torch.equal(y, torch.arange(N))
    expected = (loader.images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected)
    loader.set_epoch(9)  # epochs do not change an unshuffled, unaugmented loader
    assert torch.equal(next(iter(loader))[0], x)


def test_iteration_never_touches_the_global_rng():
    state = torch.random.get_rng_state()
    _epoch(_loader(), 0)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_epoch_seeds_are_distinct_across_seeds_and_epochs():
    seeds = {epoch_seed(s, e) for s in range(20) for e in range(200)}
    assert len(seeds) == 20 * 200


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="train_subset=0"):
        first_n(10, 0)
    with pytest.raises(ValueError, match="1..10"):
        first_n(10, 11)
    assert first_n(10, None) == 10 and first_n(10, 4) == 4
    with pytest.raises(ValueError, match="batch_size"):
        _loader(batch_size=0)


def _sharded(rank, world, *, batch_size, shuffle=True, augment=AugmentSpec(crop_padding=2)):
    loader = _loader(seed=3, shuffle=shuffle, augment=augment, batch_size=batch_size)
    loader.set_shard(rank, world)
    return loader


@pytest.mark.parametrize("n_batch", [8, 12])  # 50 = 3 x 16 + 2 (no padding) and 2 x 24 + 2 (padded by 1 sample)
def test_two_train_shards_together_are_the_one_process_double_batch_values_and_augmentation(n_batch):
    single = epoch_samples(_sharded(0, 1, batch_size=2 * n_batch), epoch=4)
    ranks = [epoch_samples(_sharded(r, 2, batch_size=n_batch), epoch=4) for r in range(2)]
    check_train_shards(single, ranks, world=2)
    assert len(_sharded(0, 2, batch_size=n_batch)) == len(_sharded(1, 2, batch_size=n_batch))


def test_two_test_shards_are_disjoint_and_cover_the_test_set_once():
    test = dict(shuffle=False, augment=None, batch_size=16)
    single = epoch_samples(_sharded(0, 1, **test), epoch=0)
    check_test_shards(single, [epoch_samples(_sharded(r, 2, **test), epoch=0) for r in range(2)])
    # 3 ranks: 16 + 17 + 17 samples, so the ranks hold 1 or 2 batches: unequal counts are allowed in evaluation
    check_test_shards(single, [epoch_samples(_sharded(r, 3, **test), epoch=0) for r in range(3)])


@pytest.mark.parametrize("world, rank", [(1, 0), (2, 1)])
def test_resume_mid_epoch_yields_the_uninterrupted_batches_from_start_batch(world, rank):
    check_resume(lambda: _sharded(rank, world, batch_size=8), epoch=2, start_batch=2)


def test_bundle_shard_cuts_train_and_test():
    from data import synthetic
    bundle = synthetic.build(batch_size=8, eval_batch_size=8, num_train=40, num_test=20)
    bundle.shard(1, 2)
    assert len(bundle.train) == 3 and len(bundle.test) == 2  # 40 / (2 x 8) rounded up; 10 test samples
    with pytest.raises(ValueError, match="0 <= rank < world"):
        bundle.shard(2, 2)


def test_bundle_needs_a_test_loader_that_can_be_sharded():
    from data.bundle import DataBundle
    train = _loader()
    with pytest.raises(TypeError, match="set_shard"):
        DataBundle(name="x", train=train, test=[(torch.zeros(1), torch.zeros(1))], model_kwargs={"num_classes": 2})
