"""Detection task: COCO mAP is 1 for perfect and 0 for empty predictions; FCOS trains on CPU, also quantized."""
import math
import unittest.mock

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir

from models.detection import PREDICTION_LAYERS, fcos
from tasks.detection import DetectionTask

CPU = torch.device("cpu")
_TARGETS = [  # two batches of two images, several classes, one image without objects
    [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 25.0], [30.0, 30.0, 60.0, 50.0]]), "labels": torch.tensor([1, 2])},
     {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([3])}],
    [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0]]), "labels": torch.tensor([2])},
     {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}],
]


class _Replay(torch.nn.Module):
    """A 'model' that returns prepared predictions batch after batch (the task only calls model(images))."""

    def __init__(self, predictions):
        super().__init__()
        self.predictions = iter(predictions)

    def forward(self, images):
        return next(self.predictions)


def _loader():
    return [([torch.zeros(3, 64, 64) for _ in batch], batch) for batch in _TARGETS]


def _predict(transform):
    return [[transform(t) for t in batch] for batch in _TARGETS]


def test_map_of_perfect_predictions_is_one():
    perfect = _predict(lambda t: {**t, "scores": torch.ones(len(t["labels"]))})
    metrics = DetectionTask().evaluate(_Replay(perfect), _loader(), CPU)
    assert set(metrics) >= {"map", "map_50"} and all(isinstance(v, float) for v in metrics.values())
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_50"] == pytest.approx(1.0)


def test_map_of_empty_and_of_wrong_class_predictions_is_zero():
    empty = _predict(lambda t: {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0),
                                "labels": torch.zeros(0, dtype=torch.int64)})
    assert DetectionTask().evaluate(_Replay(empty), _loader(), CPU)["map"] == 0.0
    wrong = _predict(lambda t: {**t, "labels": t["labels"] % 3 + 1, "scores": torch.ones(len(t["labels"]))})
    assert DetectionTask().evaluate(_Replay(wrong), _loader(), CPU)["map"] == 0.0


def test_map_of_boxes_shifted_by_half_their_size_counts_only_at_low_iou():
    # IoU of a box with itself shifted right by 1/4 of its width is 0.6: a hit at IoU 0.5, a miss at 0.75
    def shift(t):
        boxes = t["boxes"].clone()
        boxes[:, [0, 2]] += (boxes[:, 2] - boxes[:, 0])[:, None] / 4
        return {**t, "boxes": boxes, "scores": torch.ones(len(t["labels"]))}

    metrics = DetectionTask().evaluate(_Replay(_predict(shift)), _loader(), CPU)
    assert metrics["map_50"] == pytest.approx(1.0) and metrics["map_75"] == 0.0 and 0.0 < metrics["map"] < 1.0


@pytest.fixture()
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core box their barriers cost ~5x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_fcos():
    torch.manual_seed(0)
    return fcos(backbone=torchvision.models.resnet18(weights=None), num_classes=4, image_size=64,
                      fpn_channels=32, head_convs=1)


def _train_steps(model, steps):
    task = DetectionTask()
    batch = task.to_device(([torch.rand(3, 64, 64) for _ in range(2)], _TARGETS[0]), CPU)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(steps):
        loss = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return batch, torch.stack(losses)


def test_two_training_steps_on_cpu_give_finite_losses_and_move_the_weights(one_thread):
    model = _tiny_fcos()
    before = model.head.classification_head.cls_logits.weight.detach().clone()
    batch, losses = _train_steps(model, 2)
    assert torch.isfinite(losses).all() and losses.shape == (2,)
    assert not torch.equal(before, model.head.classification_head.cls_logits.weight)
    model.eval()
    with torch.no_grad():
        out = model(batch[0])
    assert len(out) == 2 and all(o["boxes"].shape[1] == 4 and torch.isfinite(o["boxes"]).all() for o in out)


def test_compile_compiles_only_the_backbone_in_place_and_it_traces_whole(fresh_dynamo):
    """compile=true on the detector: the backbone + FPN (most quantized layers and FLOPs) compiles; target matching,
    losses and NMS (`.item()`, `nonzero`) stay eager, so Inductor never sees them (compiling the whole detector
    spent minutes on their graph breaks, issue 27), and so does the head, whose five FPN levels cost 67 kernels for
    3% of a step (models/detection.py). The real command compiles in over a minute on 2 cores (too long here):
    dynamo's trace alone checks the backbone."""
    from runtime.compile import compile_model

    model = _tiny_fcos()
    assert model.compile_targets == ("backbone",)
    images = torch.rand(2, 3, 64, 64)
    assert torch._dynamo.explain(model.backbone)(images).graph_break_count == 0
    with unittest.mock.patch.object(torch.nn.Module, "compile") as compile_in_place:
        assert compile_model(model) is model  # in place: the state_dict keys stay those of the checkpoints
    assert compile_in_place.call_count == 1


def test_default_quant_spec_keeps_the_stem_and_the_prediction_convs_in_full_precision():
    from quant import QuantSpec, quantize_

    model = _tiny_fcos()
    convs = [n for n, m in model.named_modules() if type(m) is torch.nn.Conv2d]
    assert convs[0] == "backbone.body.conv1" and set(PREDICTION_LAYERS) <= set(convs)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())  # every learnable layer is a conv
    # configs/task/detection.yaml: keep_first_last keeps the stem, keep_fp the three prediction convs
    quantize_(model, QuantSpec(w_bits=4, a_bits=4, g_bits=4, keep_first_last=True, keep_fp=PREDICTION_LAYERS))
    still_fp = [n for n, m in model.named_modules() if type(m) is torch.nn.Conv2d]
    assert still_fp == ["backbone.body.conv1", *PREDICTION_LAYERS]


def test_every_conv_quantized_at_8_bits_still_trains_and_predicts_finite_boxes(one_thread):
    from quant import QuantSpec, quantize_

    model = _tiny_fcos()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    quantize_(model, QuantSpec(w_bits=8, a_bits=8, g_bits=8, keep_first_last=False, keep_fp=()))
    swapped = dict(model.named_modules())
    assert all(type(swapped[n]) is not torch.nn.Conv2d for n in names)  # nothing left in full precision
    batch, losses = _train_steps(model, 1)
    assert torch.isfinite(losses).all()
    model.eval()
    with torch.no_grad():
        out = model(batch[0])
    assert all(torch.isfinite(o["boxes"]).all() and torch.isfinite(o["scores"]).all() for o in out)


def test_detection_config_composes_to_fcos_on_fashion_detection():
    from runtime.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["task=detection"])
    assert cfg.task._target_ == "tasks.detection.DetectionTask"
    assert cfg.data._target_ == "data.detection_synthetic.build"
    assert cfg.model._target_ == "models.detection.fcos"
    assert list(cfg.quant.keep_fp) == list(PREDICTION_LAYERS)
    assert cfg.optim.optimizer._target_ == "torch.optim.AdamW"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        assert compose("config", overrides=["task=detection", "data=voc"]).data._target_ == "data.detection_voc.build"
