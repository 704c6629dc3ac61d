"""Fashion-MNIST detection canvases: boxes enclose the pasted items tightly, labels are class + 1, and a canvas
depends only on (seed, split, index)."""
import numpy as np
import pytest
import torch

from data.detection_synthetic import CanvasSpec, FashionDetection, build


@pytest.fixture(scope="module")
def bundle():
    # real FMNIST items (read from the system copy when datasets/ has none)
    return build(root="datasets", image_size=96, num_train=48, num_test=16, max_scale=1.5, batch_size=8)


def _ink_covered(image: torch.Tensor, boxes: torch.Tensor) -> bool:
    covered = torch.zeros(image.shape[-2:], dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.long().tolist():
        covered[y0:y1, x0:x1] = True
    return bool(((image[0] > 0) <= covered).all())


def test_boxes_enclose_every_pasted_item_and_are_tight(bundle):
    dataset = bundle.train.dataset
    counts = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        boxes, labels = target["boxes"], target["labels"]
        counts.append(len(boxes))
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])  # grey canvas as RGB
        assert labels.dtype == torch.int64 and ((labels >= 1) & (labels <= 10)).all()  # 0 is background
        assert boxes.dtype == torch.float32 and boxes.shape == (len(labels), 4)
        assert (boxes >= 0).all() and (boxes <= 96).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert _ink_covered(image, boxes), f"canvas {index}: ink outside every box"
        for x0, y0, x1, y1 in boxes.long().tolist():  # tight: each edge row / column of a box holds ink
            crop = image[0, y0:y1, x0:x1] > 0
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
    assert min(counts) >= 1 and max(counts) > 1


def test_canvases_are_deterministic_per_seed_and_split(bundle):
    items = bundle.train.dataset.items
    labels = bundle.train.dataset.labels
    make = lambda seed, split: FashionDetection(items, labels, num_images=4, canvas=CanvasSpec(size=96, max_scale=1.5),  # noqa: E731
                                                seed=seed, split=split)
    a, b = make(0, "train")[3], make(0, "train")[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert not torch.equal(a[0], make(1, "train")[3][0])
    assert not torch.equal(a[0], make(0, "test")[3][0])


def test_overlap_between_items_stays_below_max_iou(bundle):
    from torchvision.ops import box_iou

    for index in range(len(bundle.train.dataset)):
        boxes = bundle.train.dataset[index][1]["boxes"]
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        assert (iou <= 0.2 + 1e-6).all()


def test_bundle_gives_the_detector_its_label_count_and_canvas_size(bundle):
    assert bundle.model_kwargs == {"num_classes": 11, "in_channels": 3, "image_size": 96}
    assert len(bundle.train) == 6 and len(bundle.test) == 1


def test_bad_canvas_settings_fail_with_one_line_errors():
    with pytest.raises(ValueError, match="larger than the canvas"):
        CanvasSpec(size=32, max_scale=2.0)
    with pytest.raises(ValueError, match="objects per canvas 3..2"):
        CanvasSpec(min_objects=3, max_objects=2)
