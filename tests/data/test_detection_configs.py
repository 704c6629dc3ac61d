"""Every detection data config instantiates (its keys match the build signature) to a bundle the detector can use."""
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from data.bundle import DataBundle
from test_detection_coco import write_tiny_coco
from test_detection_voc import write_tiny_voc

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "data"
SMALL = {  # overrides that keep each build tiny
    "fashion_detection": {"num_train": 8, "num_test": 4, "image_size": 64, "max_scale": 1.5},
    "voc": {"image_size": 32, "num_workers": 0},
    "coco": {"image_size": 32, "num_workers": 0},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_config_instantiates_a_bundle_of_detection_batches(name, tmp_path):
    write_tiny_voc(tmp_path)
    (tmp_path / "coco").mkdir()
    write_tiny_coco(tmp_path / "coco")  # coco.yaml reads ${data_root}/coco
    cfg = OmegaConf.create({"data_root": str(tmp_path), "seed": 3})
    cfg.data = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    for key, value in SMALL[name].items():
        cfg.data[key] = value
    bundle = hydra.utils.instantiate(cfg.data)
    assert isinstance(bundle, DataBundle) and bundle.model_kwargs["image_size"] == SMALL[name]["image_size"]
    # the folder actually read (fashion_detection: the system copy, as tmp_path holds no Fashion-MNIST)
    assert bundle.source.startswith({"fashion_detection": "/usr/share/datasets/fashion-mnist",
                                     "coco": str(tmp_path / "coco"), "voc": str(tmp_path / "VOCdevkit" / "VOC2007")}[name])
    bundle.train.set_epoch(1)
    images, targets = next(iter(bundle.train))
    size = SMALL[name]["image_size"]
    assert all(image.shape == (3, size, size) and image.dtype == torch.float32 for image in images)
    for target in targets:
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert ((target["labels"] >= 1) & (target["labels"] < bundle.model_kwargs["num_classes"])).all()
