"""evaluate() under a real 2-process gloo group on test shards == evaluate() in one process on the whole test set.

One spawn serves all checks (starting processes is the slow part): each rank shards the test loaders of a
classification, a super-resolution and a detection set, plus sets of ONE sample so that rank 0's shard is empty,
and saves what evaluate returned; the test process then evaluates the unsharded loaders itself.
"""
import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from data import synthetic
from data.detection_loader import DetectionLoader
from data.detection_transforms import make_target
from data.sr_images import SRPairs
from data.sr_patches import SRTestLoader
from tasks.classification import ClassificationTask
from tasks.detection import DetectionTask
from tasks.reduce import all_reduce_sum, is_distributed
from tasks.super_resolution import SuperResolutionTask

WORLD = 2
CPU = torch.device("cpu")


def _classification(num_test):
    # 37 test samples: shards of 18 and 19 in batches of 8 (3 batches each; the last partial)
    bundle = synthetic.build(num_train=8, num_test=num_test, eval_batch_size=8, image_size=8, data_seed=1)
    torch.manual_seed(0)
    return ClassificationTask(), nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)), bundle.test


class _NearestPlus(nn.Module):
    def forward(self, lr):
        return F.interpolate(lr, scale_factor=2, mode="nearest") + 0.02 * torch.sin(lr.sum())


def _super_resolution(num_images):
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 30 + 2 * i, 28), generator=g, dtype=torch.uint8) for i in range(num_images)]
    pairs = SRPairs([(image, None) for image in images], scale=2, preload=True)
    return SuperResolutionTask(), _NearestPlus(), SRTestLoader(pairs)


class _Tiles:
    """Image i: one white block whose box is the target; label 1..3."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = torch.zeros(3, 16, 24)
        image[:, 2 + i % 5 : 6 + i % 5, i : i + 4] = 1.0
        return image, make_target([[i, 2 + i % 5, i + 4, 6 + i % 5]], [1 + i % 3])


class _InkDetector(nn.Module):
    """Predicts the ink's box, shifted and labelled by rules that make some detections wrong; distinct scores."""

    def forward(self, images):
        out = []
        for image in images:
            ink = image[0] > 0
            rows, cols = ink.any(1).nonzero()[:, 0], ink.any(0).nonzero()[:, 0]
            x0, y0 = float(cols.min()), float(rows.min())
            box = torch.tensor([[x0 + x0 % 3, y0, float(cols.max()) + 1, float(rows.max()) + 1]])
            label = 1 + int(x0 + (x0 % 4 == 0)) % 3
            out.append({"boxes": box, "scores": torch.tensor([0.9 - 0.01 * x0]), "labels": torch.tensor([label])})
        return out


def _detection(n):
    loader = DetectionLoader(_Tiles(n), batch_size=3, shuffle=False, flip=False, seed=0, pad_shards=False)
    return DetectionTask(), _InkDetector(), loader


CASES = {  # name -> (builder, argument); the "one_*" sets hold one sample, so rank 0 of 2 evaluates nothing
    "classification": (_classification, 37), "one_classification": (_classification, 1),
    "super_resolution": (_super_resolution, 5), "one_super_resolution": (_super_resolution, 1),
    "detection": (_detection, 11), "one_detection": (_detection, 1),
}


def _evaluate(name, rank=0, world=1):
    build, argument = CASES[name]
    task, model, loader = build(argument)
    loader.set_shard(rank, world)
    with torch.no_grad():
        return task.evaluate(model.eval(), loader, CPU), sum(1 for _ in loader)


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        results = {name: _evaluate(name, rank, WORLD) for name in CASES}
        results["sum"] = all_reduce_sum(torch.tensor([rank + 1.0])).item(), is_distributed()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def test_all_reduce_sum_sums_over_ranks_and_is_a_no_op_alone(ranks):
    assert [r["sum"] for r in ranks] == [(3.0, True)] * WORLD
    assert all_reduce_sum(torch.tensor([5.0])).item() == 5.0 and not is_distributed()


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_shards_evaluate_to_the_one_process_metrics_on_the_whole_set(name, ranks):
    single, batches = _evaluate(name)
    per_rank = [r[name] for r in ranks]
    for metrics, _ in per_rank:  # every rank returns the whole-set metrics
        assert metrics.keys() == single.keys()
        for key, value in single.items():
            assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    if name.startswith("one_"):
        assert [count for _, count in per_rank] == [0, 1]  # rank 0's shard was empty
    else:
        assert all(count > 0 for _, count in per_rank) and sum(c for _, c in per_rank) >= batches
    if name == "detection":
        assert 0.0 < single["map"] < 1.0  # a metric with something to get wrong
