"""PASCAL VOC detection (Everingham et al., IJCV 2010) read from the standard VOCdevkit layout.

    <root>/VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2007/Annotations/<id>.xml
    <root>/VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt

VOC boxes are 1-based inclusive pixel indices; we convert to 0-based xyxy with exclusive upper edges
(x0 = xmin - 1, x1 = xmax). Objects marked `difficult` are dropped unless `keep_difficult` (VOC's own metric
ignores them; COCO-style mAP has no "ignore" flag, so dropping is the faithful choice). Labels are the index
in VOC_CLASSES + 1.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from data.bundle import DataBundle
from data.checks import check_int, check_ints
from data.detection_loader import detection_bundle
from data.detection_transforms import drop_degenerate, make_target, resize_square

NAME = "voc"
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_LABEL = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}


def parse_voc_xml(path: Path, *, keep_difficult: bool):
    """Boxes (list of [x0, y0, x1, y1] floats) and labels (1..20) of one VOC annotation file."""
    root = ET.parse(path).getroot()
    boxes, labels = [], []
    for obj in root.iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in _LABEL:
            raise ValueError(f"{path}: unknown VOC class {name!r}; expected one of {', '.join(VOC_CLASSES)}")
        if not keep_difficult and obj.findtext("difficult", "0").strip() == "1":
            continue
        bb = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([xmin - 1.0, ymin - 1.0, xmax, ymax])
        labels.append(_LABEL[name])
    return boxes, labels


class VOCDetection(Dataset):
    """One split of one VOC year; returns ((3, S, S) float32 image in [0, 1], target) resized to S = image_size."""

    def __init__(self, root: str | Path, *, year: str = "2007", split: str = "trainval", image_size: int,
                 keep_difficult: bool = False):
        self.base = Path(root) / "VOCdevkit" / f"VOC{year}"
        ids_file = self.base / "ImageSets" / "Main" / f"{split}.txt"
        check_int("image_size", image_size)
        if not ids_file.is_file():
            raise FileNotFoundError(
                f"VOC split file {ids_file} not found; expected {self.base}/{{JPEGImages,Annotations,ImageSets/Main}}: "
                f"download the VOC{year} tars (VOCtrainval_*.tar, and VOCtest_*.tar for 2007) from the PASCAL VOC "
                f"site http://host.robots.ox.ac.uk/pascal/VOC/voc{year}/ and untar them in {Path(root)}, or set "
                f"DATA_ROOT (or data.root) to the folder holding VOCdevkit/"
            )
        try:
            text = ids_file.read_text()
        except UnicodeDecodeError as e:  # its message names no file
            raise ValueError(f"{ids_file} is not a text list of image ids ({e}): re-extract the VOC tar") from e
        self.ids = [line.split()[0] for line in text.splitlines() if line.strip()]
        self.image_size, self.keep_difficult = image_size, keep_difficult

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        boxes, labels = parse_voc_xml(self.base / "Annotations" / f"{image_id}.xml",
                                      keep_difficult=self.keep_difficult)
        with Image.open(self.base / "JPEGImages" / f"{image_id}.jpg") as image:
            pixels, target = resize_square(image, make_target(boxes, labels), self.image_size)
        return pixels, drop_degenerate(target)


def build(
    *,
    root: str | Path,
    year: str = "2007",
    train_split: str = "trainval",
    test_split: str = "test",
    image_size: int = 320,
    keep_difficult: bool = False,
    batch_size: int = 16,
    eval_batch_size: int = 16,
    num_workers: int = 2,
    flip: bool = True,
    seed: int = 0,
) -> DataBundle:
    """VOC bundle: train on `train_split` (flipped), evaluate on `test_split`; 20 classes + background."""
    check_ints(image_size=image_size, batch_size=batch_size, eval_batch_size=eval_batch_size)
    check_int("num_workers", num_workers, minimum=0)
    common = dict(year=str(year), image_size=image_size, keep_difficult=keep_difficult)
    train_set = VOCDetection(root, split=train_split, **common)
    test_set = VOCDetection(root, split=test_split, **common)
    return detection_bundle(f"{NAME}{year}", train_set, test_set, num_classes=len(VOC_CLASSES) + 1,
                            image_size=image_size,
                            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                            flip=flip, seed=seed, source=str(train_set.base.absolute()))
