"""ShardPlan: which positions of an epoch's order each DDP rank reads, and where a resumed epoch starts."""
import pytest

from data.shard import ShardBatchSampler, ShardPlan, check_shard


def _plan(n, b, *, pad=True, drop_last=False, rank=0, world=1):
    plan = ShardPlan(n, b, pad=pad, drop_last=drop_last)
    plan.set_shard(rank, world)
    return plan


def _positions(plan) -> list[list[int]]:
    return [list(r) for r in plan.batches()]


@pytest.mark.parametrize("n, b", [(50, 16), (48, 16), (1, 4), (7, 1)])
def test_one_process_is_the_plain_batching(n, b):
    assert _positions(_plan(n, b)) == [list(range(s, min(s + b, n))) for s in range(0, n, b)]
    assert _positions(_plan(n, b, pad=False)) == _positions(_plan(n, b))
    if n >= b:
        assert _positions(_plan(n, b, drop_last=True)) == [list(range(s, s + b)) for s in range(0, n - b + 1, b)]


@pytest.mark.parametrize("n, b, world", [(50, 4, 2), (51, 4, 2), (53, 4, 4), (3, 2, 4), (64, 8, 4), (10, 3, 3)])
def test_training_ranks_take_slices_of_the_global_batch_and_equal_step_counts(n, b, world):
    single = _positions(_plan(n, world * b))
    ranks = [_positions(_plan(n, b, rank=r, world=world)) for r in range(world)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(single)
    for k, expected in enumerate(single):
        union = [p for r in ranks for p in r[k]]
        assert len({len(r[k]) for r in ranks}) == 1
        assert union[: len(expected)] == expected  # the global batch, in rank order
        assert union[len(expected):] == list(range(n, n + len(union) - len(expected)))  # padding, read as p % n
        assert len(union) - len(expected) < world and (len(union) == len(expected) or k == len(single) - 1)


def test_drop_last_drops_the_partial_global_batch_instead_of_padding():
    ranks = [_positions(_plan(50, 4, drop_last=True, rank=r, world=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]  # 50 // 12
    assert sorted(p for r in ranks for batch in r for p in batch) == list(range(48))


@pytest.mark.parametrize("n, b, world", [(50, 16, 2), (7, 2, 3), (2, 5, 4), (100, 7, 8)])
def test_evaluation_shards_are_disjoint_contiguous_and_complete(n, b, world):
    ranks = [_plan(n, b, pad=False, rank=r, world=world) for r in range(world)]
    flat = [p for plan in ranks for batch in _positions(plan) for p in batch]
    assert flat == list(range(n))  # no padding, no overlap, nothing missing
    assert all(len(batch) <= b for plan in ranks for batch in _positions(plan))
    assert all(len(plan) == len(_positions(plan)) for plan in ranks)  # may differ between ranks, even be 0


def test_start_batch_skips_batches_and_keeps_len():
    plan = _plan(50, 4, rank=1, world=2)
    full = _positions(plan)
    plan.set_epoch(3, start_batch=5)
    assert len(plan) == len(full) and _positions(plan) == full[5:] and plan.epoch == 3
    plan.set_epoch(3, start_batch=len(full))  # resumed exactly at the epoch's end: nothing left
    assert _positions(plan) == []
    plan.set_epoch(4)
    assert _positions(plan) == full


def test_batch_sampler_maps_positions_through_the_epoch_order_and_wraps():
    plan = _plan(5, 2, rank=1, world=2)  # rank 1 reads positions [2, 3], then [5] -> wraps to 0
    sampler = ShardBatchSampler(plan, order=lambda epoch: [10 * epoch + i for i in (4, 3, 2, 1, 0)])
    plan.set_epoch(1)
    assert list(sampler) == [[12, 11], [14]] and len(sampler) == 2
    plan.set_epoch(1, start_batch=1)
    assert list(sampler) == [[14]] and len(sampler) == 1


@pytest.mark.parametrize("rank, world", [(2, 2), (-1, 2), (0, 0), (True, 2), (0, 2.0)])
def test_bad_rank_or_world_is_a_one_line_error(rank, world):
    with pytest.raises(ValueError, match="0 <= rank < world") as err:
        check_shard(rank, world)
    assert "\n" not in str(err.value)


def test_bad_start_batch_and_impossible_plans_are_one_line_errors():
    plan = _plan(10, 4)
    for bad in (-1, 4, 1.5):
        with pytest.raises(ValueError, match=r"start_batch=.* use an integer in 0\.\.3"):
            plan.set_epoch(0, start_batch=bad)
    with pytest.raises(ValueError, match="no full global batch"):
        _plan(10, 4, drop_last=True, world=3)  # 10 samples < 3 ranks x 4
    with pytest.raises(ValueError, match="batch_size=0"):
        ShardPlan(10, 0, pad=True)
