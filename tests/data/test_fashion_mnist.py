"""Fashion-MNIST: the real files from the Debian package, the folder search order, and the missing-data error."""
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from data import fashion_mnist as fm
from data.idx import write_idx

SYSTEM = Path("/usr/share/datasets/fashion-mnist")
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "data" / "fashion_mnist.yaml"


def _instantiate(data_root, **overrides):
    """Build `data=fashion_mnist` the way the trainer does, with DATA_ROOT=`data_root` and data.<key> overrides."""
    cfg = OmegaConf.create({"data_root": str(data_root), "seed": 0, "data": OmegaConf.load(CONFIG)})
    for key, value in overrides.items():
        cfg.data[key] = value
    return hydra.utils.instantiate(cfg.data)


@pytest.fixture(scope="module")
def real():
    return fm.load_fashion_mnist(fm.locate_fashion_mnist("/nonexistent-root"))


def test_real_dataset_has_standard_sizes_and_balanced_labels(real):
    train_x, train_y, test_x, test_y = real
    assert train_x.shape == (60000, 1, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 1, 28, 28)
    assert train_y.dtype == torch.int64 and test_y.shape == (10000,)
    # Fashion-MNIST is exactly balanced: 6000 / 1000 images of each of the 10 classes.
    assert torch.bincount(train_y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test_y, minlength=10).tolist() == [1000] * 10


def test_normalisation_constants_are_the_training_set_statistics(real):
    pixels = real[0].double() / 255
    assert abs(pixels.mean().item() - fm.MEAN[0]) < 1e-3
    assert abs(pixels.std().item() - fm.STD[0]) < 1e-3


def test_build_yields_normalised_float_batches_with_int_labels():
    bundle = fm.build(root="/nonexistent-root", batch_size=64, eval_batch_size=500, train_subset=1000, seed=1)
    assert bundle.name == "fashion_mnist"
    assert bundle.model_kwargs == {"num_classes": 10, "in_channels": 1}
    assert len(bundle.train) == 16  # ceil(1000 / 64): the last partial batch is kept
    assert len(bundle.test) == 20
    x, y = next(iter(bundle.train))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    test_x = torch.cat([x for x, _ in bundle.test])
    # Un-padded, un-augmented test images normalised with train stats: roughly zero mean, unit std.
    assert abs(test_x.mean().item()) < 0.05 and abs(test_x.std().item() - 1) < 0.05


def _write_fake(folder: Path, n_train: int, n_test: int, compress: bool, fill: int) -> None:
    folder.mkdir(parents=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", np.full((n, 28, 28), fill, np.uint8), compress=compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8), compress=compress)


def test_search_order_prefers_root_layouts_over_the_system_copy(tmp_path):
    _write_fake(tmp_path / "FashionMNIST" / "raw", 30, 10, compress=False, fill=7)  # torchvision layout, raw files
    found = fm.locate_fashion_mnist(tmp_path, system_dirs=(SYSTEM,))
    assert found["train_images"].parent == tmp_path / "FashionMNIST" / "raw"
    _write_fake(tmp_path / "fashion-mnist", 20, 10, compress=True, fill=9)
    found = fm.locate_fashion_mnist(tmp_path, system_dirs=(SYSTEM,))
    assert found["train_images"] == tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    bundle = fm.build(root=tmp_path, batch_size=8, augment=False)
    assert bundle.source == str(tmp_path / "fashion-mnist")  # the folder read, for summary.json
    assert len(bundle.train) == 3  # 20 fake training images, not the 60000 real ones
    x, _ = next(iter(bundle.test))
    expected = (9 / 255 - fm.MEAN[0]) / fm.STD[0]
    assert torch.allclose(x, torch.full_like(x, expected))


def test_missing_dataset_error_is_one_line_naming_every_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        fm.locate_fashion_mnist(tmp_path, system_dirs=(tmp_path / "system",))
    message = str(err.value)
    assert "\n" not in message
    for folder in (tmp_path / "fashion-mnist", tmp_path / "FashionMNIST" / "raw", tmp_path / "system"):
        assert str(folder) in message
    assert "make data" in message and "DATA_ROOT" in message


def test_an_explicit_root_without_the_files_is_a_one_line_error_not_a_fallback(tmp_path):
    # data.root=<folder> typed by a researcher means that folder: training on the system copy instead would make
    # config.yaml name a folder that was never read (issue 27 case 5).
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InstantiationException) as err:
        _instantiate(tmp_path / "default", root=str(empty))
    error = err.value.__cause__
    assert isinstance(error, FileNotFoundError), repr(error)
    message = str(error)
    assert "\n" not in message and f"data.root={empty}" in message
    for stem in fm.FILES.values():
        assert stem in message
    assert str(SYSTEM) not in message.split(";")[0]  # the system copy was not searched, only suggested


def test_an_explicit_root_holding_the_files_itself_is_read(tmp_path):
    _write_fake(tmp_path / "mine", 20, 10, compress=False, fill=5)
    bundle = _instantiate(tmp_path / "default", root=str(tmp_path / "mine"), batch_size=8)
    assert bundle.source == str(tmp_path / "mine") and len(bundle.train) == 3


def test_the_default_root_falls_back_to_the_system_copy_and_says_so(tmp_path):
    bundle = _instantiate(tmp_path, train_subset=10)
    assert bundle.source.startswith(f"{SYSTEM} (") and str(tmp_path) in bundle.source
