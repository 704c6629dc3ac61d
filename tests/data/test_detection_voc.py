"""PASCAL VOC reader on a tiny VOCdevkit written in the real on-disk format (JPEG + XML + ImageSets)."""
import numpy as np
import pytest
import torch
from PIL import Image

from data.detection_voc import VOC_CLASSES, VOCDetection, build

_XML = """<annotation>
  <folder>VOC2007</folder><filename>{name}.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>dog</name><pose>Left</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>5</xmin><ymin>4</ymin><xmax>20</xmax><ymax>14</ymax></bndbox></object>
  <object><name>car</name><difficult>1</difficult>
    <bndbox><xmin>25</xmin><ymin>20</ymin><xmax>38</xmax><ymax>29</ymax></bndbox></object>
</annotation>
"""


def write_tiny_voc(root):
    """Two 40x30 JPEGs with a dog (and a difficult car) in VOCdevkit/VOC2007; trainval = both, test = one."""
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True)
    for name in ("000001", "000002"):
        pixels = np.zeros((30, 40, 3), dtype=np.uint8)
        pixels[3:14, 4:20] = (255, 0, 0)  # the dog box (1-based 5..20 x 4..14) painted red
        Image.fromarray(pixels).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
        (base / "Annotations" / f"{name}.xml").write_text(_XML.format(name=name))
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n")
    (base / "ImageSets" / "Main" / "test.txt").write_text("000002\n")


@pytest.fixture()
def voc_root(tmp_path):
    write_tiny_voc(tmp_path)
    return tmp_path


def test_boxes_are_converted_to_zero_based_xyxy_and_resized(voc_root):
    image, target = VOCDetection(voc_root, split="trainval", image_size=60)[0]
    assert image.shape == (3, 60, 60) and image.dtype == torch.float32
    # 1-based inclusive [5, 4, 20, 14] -> 0-based [4, 3, 20, 14], then x * 60/40, y * 60/30
    torch.testing.assert_close(target["boxes"], torch.tensor([[6.0, 6.0, 30.0, 28.0]]))
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]  # the difficult car is dropped
    red = image[:, 10:24, 10:26].mean(dim=(1, 2))  # inside the resized box
    assert red[0] > 0.8 and red[1] < 0.2 and image[:, 40:, 40:].max() < 0.2


def test_keep_difficult_keeps_the_car(voc_root):
    _, target = VOCDetection(voc_root, split="trainval", image_size=40, keep_difficult=True)[0]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("car") + 1]
    torch.testing.assert_close(target["boxes"][1], torch.tensor([24.0, 19.0 * 40 / 30, 38.0, 29.0 * 40 / 30]))


def test_bundle_trains_on_trainval_and_tests_on_test(voc_root):
    bundle = build(root=voc_root, image_size=32, batch_size=2, num_workers=0, seed=0)
    assert bundle.model_kwargs["num_classes"] == 21 and len(bundle.train) == 1 and len(bundle.test) == 1
    bundle.train.set_epoch(0)
    images, targets = next(iter(bundle.train))
    assert len(images) == 2 and all(t["boxes"].shape == (1, 4) for t in targets)


def test_missing_devkit_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"VOC2007.*trainval\.txt not found"):
        VOCDetection(tmp_path, split="trainval", image_size=32)
