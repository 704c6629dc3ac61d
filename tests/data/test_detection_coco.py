"""COCO reader on a tiny instances_*.json + images written in the real format."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from data.detection_coco import COCODetection, build


def write_tiny_coco(tmp_path):
    """train2017/val2017 with two 50x20 images each and the same instances json (3 categories, 1 crowd)."""
    for split in ("train2017", "val2017"):
        (tmp_path / split).mkdir()
        for image_id in (1, 2):
            Image.fromarray(np.full((20, 50, 3), 128, np.uint8)).save(tmp_path / split / f"{image_id:012d}.jpg")
    (tmp_path / "annotations").mkdir()
    doc = {
        "images": [{"id": 2, "file_name": "000000000002.jpg", "width": 50, "height": 20},
                   {"id": 1, "file_name": "000000000001.jpg", "width": 50, "height": 20}],
        # non-contiguous ids, listed out of order: labels follow ascending id
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [10, 2, 20, 8], "iscrowd": 0, "area": 160},
            {"id": 11, "image_id": 1, "category_id": 90, "bbox": [0, 0, 50, 20], "iscrowd": 1, "area": 1000},
            {"id": 12, "image_id": 1, "category_id": 90, "bbox": [30, 10, 5, 5], "iscrowd": 0, "area": 25},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1, "area": 100},
        ],
    }
    for split in ("train2017", "val2017"):
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))


@pytest.fixture()
def coco_root(tmp_path):
    write_tiny_coco(tmp_path)
    return tmp_path


def test_category_ids_map_to_contiguous_labels_and_crowds_are_skipped(coco_root):
    dataset = COCODetection(coco_root / "val2017", coco_root / "annotations/instances_val2017.json",
                            image_size=100, skip_empty=False)
    assert dataset.category_ids == [1, 5, 90] and len(dataset) == 2
    image, target = dataset[0]  # image id 1 (sorted by id)
    assert image.shape == (3, 100, 100)
    assert target["labels"].tolist() == [2, 3]  # airplane (id 5) -> 2, toothbrush (id 90) -> 3; crowd skipped
    # xywh -> xyxy, then x * 100/50 and y * 100/20
    torch.testing.assert_close(target["boxes"], torch.tensor([[20.0, 10.0, 60.0, 50.0], [60.0, 50.0, 70.0, 75.0]]))
    _, only_crowd = dataset[1]
    assert only_crowd["boxes"].shape == (0, 4) and only_crowd["labels"].shape == (0,)


def test_training_split_drops_images_without_boxes(coco_root):
    bundle = build(root=coco_root, image_size=32, batch_size=4, num_workers=0)
    assert len(bundle.train.dataset) == 1 and len(bundle.test.dataset) == 2
    assert bundle.model_kwargs["num_classes"] == 4  # 3 categories + background


def test_missing_annotation_file_names_the_path(coco_root):
    (coco_root / "annotations" / "instances_train2017.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations/instances_train2017\.json not found"):
        build(root=coco_root)
