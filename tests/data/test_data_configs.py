"""Every configs/data/*.yaml composes with the lead's top-level keys and instantiates to a DataBundle."""
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from data.bundle import DataBundle
from test_cifar import write_fake_cifar10, write_fake_cifar100

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "data"
CLASSIFICATION = ["fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic"]
COMMON_KEYS = {"root", "batch_size", "eval_batch_size", "num_workers", "seed", "train_subset", "augment"}


def _compose(name, data_root, **overrides):
    cfg = OmegaConf.create({"data_root": str(data_root), "seed": 3})
    cfg.data = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    for key, value in overrides.items():
        cfg.data[key] = value
    return cfg


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_config_has_the_common_keys_and_points_at_a_build_function(name):
    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{name}.yaml"), resolve=False)
    assert COMMON_KEYS <= set(raw)
    assert raw["_target_"].startswith("data.") and raw["_target_"].endswith(".build")
    assert raw["root"] == "${data_root}" and raw["seed"] == "${seed}"
    assert raw["train_subset"] is None and raw["augment"] is True and raw["eval_batch_size"] == 512


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_root")
    write_fake_cifar10(root)
    write_fake_cifar100(root)
    from PIL import Image
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / "imagenet" / split / name).mkdir(parents=True)
            Image.new("RGB", (40, 30), color=(10, 20, 30)).save(root / "imagenet" / split / name / "0.png")
    return root


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_config_instantiates_a_bundle_whose_batches_match_model_kwargs(name, data_root):
    overrides = {"train_subset": 2} if name != "imagenet" else {"num_workers": 0, "image_size": 32, "resize_size": 36}
    cfg = _compose(name, data_root, **overrides)
    bundle = hydra.utils.instantiate(cfg.data)
    assert isinstance(bundle, DataBundle)
    bundle.train.set_epoch(1)
    x, y = next(iter(bundle.train))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape[1] == bundle.model_kwargs["in_channels"]
    assert int(y.max()) < bundle.model_kwargs["num_classes"]
    assert bundle.train.seed == 3  # ${seed} reached the loader
    # where the data came from (fashion_mnist: the system copy, as data_root holds no Fashion-MNIST)
    assert bundle.source.startswith({"fashion_mnist": "/usr/share/datasets/fashion-mnist", "synthetic": "synthetic",
                                     "cifar10": str(data_root / "cifar-10-batches-py"),
                                     "cifar100": str(data_root / "cifar-100-python"),
                                     "imagenet": str(data_root / "imagenet")}[name])
