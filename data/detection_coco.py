"""COCO detection (Lin et al., ECCV 2014) read from the standard layout: an image folder + instances_*.json.

    <root>/train2017/*.jpg   <root>/annotations/instances_train2017.json
    <root>/val2017/*.jpg     <root>/annotations/instances_val2017.json

COCO boxes are [x, y, w, h] in pixels; we return xyxy. Category ids (1..90 with gaps) map to contiguous labels
1..K in ascending id order (0 stays background). Crowd regions (`iscrowd`) are skipped: they mark groups, not
objects, and COCO's own evaluation ignores them. Training drops images left without boxes, as torchvision's
reference recipe does; evaluation keeps them (false positives there must count).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from data.bundle import DataBundle
from data.checks import check_int, check_ints
from data.detection_loader import detection_bundle
from data.detection_transforms import drop_degenerate, make_target, resize_square

NAME = "coco"


LAYOUT = "<root>/{train2017,val2017}/*.jpg and <root>/annotations/instances_{train2017,val2017}.json"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"COCO {what} {path} not found; expected {LAYOUT}: download train2017.zip, val2017.zip and "
            f"annotations_trainval2017.zip from https://cocodataset.org/#download and unzip them in <root>, or set "
            f"DATA_ROOT to the folder holding coco/ (or data.root, data.train_images, data.train_annotations, ...)"
        )
    return path


def _read_annotations(path: Path) -> dict:
    """The instances json; a cut-short or foreign file is a one-line ValueError naming it (json's own message
    names no file)."""
    try:
        data = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is cut short or not JSON ({type(e).__name__}: {e}): re-download it") from e
    missing = {"images", "annotations", "categories"} - (data.keys() if isinstance(data, dict) else set())
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}; is it a COCO instances_*.json?")
    return data


class COCODetection(Dataset):
    """One COCO split; returns ((3, S, S) float32 image in [0, 1], target) resized to S = image_size.

    `category_ids`: the sorted category ids of the label space (label = position + 1); taken from the json
    when None. Pass the training split's ids to the test split so both share one label space.
    """

    def __init__(self, images_dir: str | Path, annotations: str | Path, *, image_size: int,
                 skip_empty: bool, category_ids: list[int] | None = None):
        check_int("image_size", image_size)
        self.images_dir = _require(Path(images_dir), "image folder")
        data = _read_annotations(_require(Path(annotations), "annotation file"))
        if category_ids is None:
            category_ids = sorted(c["id"] for c in data["categories"])
        self.category_ids = list(category_ids)
        label_of = {cat: i + 1 for i, cat in enumerate(self.category_ids)}
        per_image = defaultdict(list)
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue  # crowd regions are not objects; zero-area boxes cannot be trained on
            if ann["category_id"] not in label_of:
                raise ValueError(f"{annotations}: annotation {ann.get('id')} has category_id {ann['category_id']} "
                                 f"outside the label space {self.category_ids}")
            per_image[ann["image_id"]].append(([x, y, x + w, y + h], label_of[ann["category_id"]]))
        images = sorted(data["images"], key=lambda im: im["id"])  # fixed order, independent of json layout
        if skip_empty:
            images = [im for im in images if per_image[im["id"]]]
        self.files = [im["file_name"] for im in images]
        self.objects = [per_image[im["id"]] for im in images]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        objects = self.objects[index]
        target = make_target([box for box, _ in objects], [label for _, label in objects])
        with Image.open(self.images_dir / self.files[index]) as image:
            pixels, target = resize_square(image, target, self.image_size)
        return pixels, drop_degenerate(target)


def build(
    *,
    root: str | Path,
    train_images: str = "train2017",
    train_annotations: str = "annotations/instances_train2017.json",
    test_images: str = "val2017",
    test_annotations: str = "annotations/instances_val2017.json",
    image_size: int = 320,
    batch_size: int = 16,
    eval_batch_size: int = 16,
    num_workers: int = 2,
    flip: bool = True,
    seed: int = 0,
) -> DataBundle:
    """COCO bundle: train on `train_*` (flipped, images without boxes dropped), evaluate on `test_*`.

    Relative paths are taken under `root`. num_classes = number of categories + background (81 for COCO 2017).
    """
    check_ints(image_size=image_size, batch_size=batch_size, eval_batch_size=eval_batch_size)
    check_int("num_workers", num_workers, minimum=0)
    root = Path(root)
    # All four paths before parsing any json (the train annotations take many seconds to read).
    paths = [root / path for path in (train_images, train_annotations, test_images, test_annotations)]
    for path, what in zip(paths, ("image folder", "annotation file") * 2):
        _require(path, what)
    # The root, unless a path was given absolute (root / "/x" is "/x"): then the four paths read.
    source = str(root.absolute()) if all(p.is_relative_to(root) for p in paths) else ", ".join(map(str, paths))
    train_set = COCODetection(root / train_images, root / train_annotations, image_size=image_size,
                              skip_empty=True)
    test_set = COCODetection(root / test_images, root / test_annotations, image_size=image_size,
                             skip_empty=False, category_ids=train_set.category_ids)
    return detection_bundle(NAME, train_set, test_set, num_classes=len(train_set.category_ids) + 1, image_size=image_size,
                            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                            flip=flip, seed=seed, source=source)
