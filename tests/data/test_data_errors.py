"""Every data config without its files, or with a bad number, fails in ONE line that says what to do (issue 9).

Built the way the trainer builds them (compose the real config, `hydra.utils.instantiate`), with an empty
DATA_ROOT; Hydra wraps a builder's exception, so the builder's own exception is read from the cause chain.
"""
from pathlib import Path

import hydra
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from data.idx import write_idx

from test_cifar import write_fake_cifar10, write_fake_cifar100
from test_detection_coco import write_tiny_coco
from test_detection_voc import write_tiny_voc
from test_sr_data import write_div2k

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "data"


def _build_error(name: str, data_root: Path, overrides=()) -> BaseException:
    """The exception the data builder raised for `data=<name>` with `data_root`, unwrapped from Hydra's."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        data = compose(config_name=name, overrides=list(overrides))
    cfg = OmegaConf.create({"data_root": str(data_root), "seed": 0, "data": data})
    with pytest.raises(Exception) as err:
        hydra.utils.instantiate(cfg.data)
    error = err.value
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


# config -> (path the message must name, relative to DATA_ROOT; words that say how to get the data)
MISSING = {
    "cifar10": ("cifar-10-batches-py/data_batch_1", ["torchvision.datasets.CIFAR10(", "download=True",
                                                     "cifar-10-python.tar.gz"]),
    "cifar100": ("cifar-100-python/train", ["torchvision.datasets.CIFAR100(", "cifar-100-python.tar.gz"]),
    "imagenet": ("imagenet/train", ["<class>/<image>", "image-net.org", "valprep.sh"]),
    "div2k": ("DIV2K/DIV2K_train_HR", ["0001.png", "DIV2K_train_HR.zip", "data.vision.ee.ethz.ch/cvl/DIV2K"]),
    "sr_benchmark": ("benchmark/Set5/HR", ["<image>.png", "benchmark.tar"]),
    "voc": ("VOCdevkit/VOC2007/ImageSets/Main/trainval.txt", ["JPEGImages", "host.robots.ox.ac.uk/pascal/VOC"]),
    "coco": ("coco/train2017", ["instances_", "annotations_trainval2017.zip", "cocodataset.org"]),
}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_dataset_is_one_line_naming_the_path_the_layout_and_how_to_get_it(name, tmp_path):
    if name == "sr_benchmark":
        write_div2k(tmp_path / "DIV2K", scale=2)  # the training set is there; the benchmark set is not
    error = _build_error(name, tmp_path)
    assert isinstance(error, FileNotFoundError), repr(error)
    message = str(error)
    path, how = MISSING[name]
    assert "\n" not in message
    assert str(tmp_path / path) in message
    for words in [*how, "DATA_ROOT"]:
        assert words in message, words
    assert "make data" not in message  # `make data` fetches Fashion-MNIST only


# (config, override, the message's start). DATA_ROOT is empty: the number must be rejected before files are sought.
BAD_NUMBERS = [
    *[(name, "batch_size=0", "data.batch_size=0 is invalid: use an integer >= 1")
      for name in ("fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic", "div2k", "sr_benchmark",
                   "skimage_sr", "voc", "coco", "fashion_detection")],
    *[(name, "eval_batch_size=-4", "data.eval_batch_size=-4 is invalid: use an integer >= 1")
      for name in ("fashion_mnist", "cifar10", "imagenet", "synthetic", "voc", "coco", "fashion_detection")],
    *[(name, "num_workers=-1", "data.num_workers=-1 is invalid: use an integer >= 0")
      for name in ("fashion_mnist", "cifar100", "imagenet", "div2k", "skimage_sr", "voc", "coco")],
    *[(name, "train_subset=0", "data.train_subset=0 is invalid: use null (all) or an integer")
      for name in ("fashion_mnist", "cifar10", "synthetic")],
    ("imagenet", "batch_size=true", "data.batch_size=True is invalid: use an integer >= 1"),
    ("imagenet", "image_size=0", "data.image_size=0 is invalid"),
    ("div2k", "lr_patch_size=0", "data.lr_patch_size=0 is invalid"),
    ("div2k", "patches_per_epoch=0", "data.patches_per_epoch=0 is invalid"),
    ("div2k", "batch_size=32", "data.batch_size=32 is invalid: use an integer in 1..data.patches_per_epoch=16"),
    ("div2k", "scale=1", "data.scale=1 is invalid: use an integer >= 2"),
    ("div2k", "test_limit=0", "data.test_limit=0 is invalid"),
    ("skimage_sr", "patches_per_epoch=0", "data.patches_per_epoch=0 is invalid"),
    ("voc", "image_size=0", "data.image_size=0 is invalid"),
    ("coco", "image_size=0", "data.image_size=0 is invalid"),
    ("fashion_detection", "num_train=0", "data.num_train=0 is invalid"),
    ("synthetic", "num_test=0", "data.num_test=0 is invalid"),
]


@pytest.mark.parametrize("name, override, start", BAD_NUMBERS, ids=[f"{n}-{o}" for n, o, _ in BAD_NUMBERS])
def test_bad_number_is_one_line_naming_the_config_key(name, override, start, tmp_path):
    overrides = [override, "patches_per_epoch=16"] if override.startswith("batch_size=32") else [override]
    error = _build_error(name, tmp_path, overrides)
    assert isinstance(error, ValueError), repr(error)
    assert str(error).startswith(start) and "\n" not in str(error)


def _cut(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])


def _fashion_mnist_gz_cut_short(root: Path) -> Path:
    (root / "fashion-mnist").mkdir()
    for split in ("train", "t10k"):
        images = np.random.default_rng(0).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
        write_idx(root / "fashion-mnist" / f"{split}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(root / "fashion-mnist" / f"{split}-labels-idx1-ubyte.gz", images[:, 0, 0] % 10, compress=True)
    _cut(root / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    return root / "fashion-mnist" / "train-images-idx3-ubyte.gz"


def _cifar10_batch_cut_short(root: Path) -> Path:
    write_fake_cifar10(root)
    _cut(root / "cifar-10-batches-py" / "data_batch_2")
    return root / "cifar-10-batches-py" / "data_batch_2"


def _cifar100_not_a_pickle(root: Path) -> Path:
    write_fake_cifar100(root)
    (root / "cifar-100-python" / "train").write_bytes(b"<html>404 Not Found</html>")
    return root / "cifar-100-python" / "train"


def _coco_json_cut_short(root: Path) -> Path:
    (root / "coco").mkdir()
    write_tiny_coco(root / "coco")
    _cut(root / "coco" / "annotations" / "instances_val2017.json")
    return root / "coco" / "annotations" / "instances_val2017.json"


def _voc_split_file_binary(root: Path) -> Path:
    write_tiny_voc(root)
    split = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    split.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")  # a gzip header, not text
    return split


def _div2k_png_cut_short(root: Path) -> Path:
    write_div2k(root / "DIV2K", scale=2)
    _cut(root / "DIV2K" / "DIV2K_train_HR" / "0002.png")
    return root / "DIV2K" / "DIV2K_train_HR" / "0002.png"


# config -> writes its files with one damaged, returns that file. Read when the bundle is built: a one-line error
# naming the file (the trainer's exit 2), not the reader library's message, which names none (issue 27 case 6).
DAMAGED = {
    "fashion_mnist": _fashion_mnist_gz_cut_short,
    "cifar10": _cifar10_batch_cut_short,
    "cifar100": _cifar100_not_a_pickle,
    "coco": _coco_json_cut_short,
    "voc": _voc_split_file_binary,
    "div2k": _div2k_png_cut_short,
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_file_is_a_one_line_value_error_naming_it(name, tmp_path):
    damaged = DAMAGED[name](tmp_path)
    overrides = ["patches_per_epoch=16", "lr_patch_size=4", "test_limit=2"] if name == "div2k" else []
    error = _build_error(name, tmp_path, overrides)
    assert isinstance(error, ValueError), repr(error)
    assert str(damaged) in str(error) and "\n" not in str(error), str(error)
