"""Every configs/model/*.yaml builds through Hydra with the bundle's kwargs and runs at the right output shape."""
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from models import timm_model, torchvision_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"
# The classification models (detection / super-resolution configs in this group have their own tests).
NAMES = ["mobilenet_v2", "resnet18", "resnet20", "resnet32", "resnet34", "resnet50", "resnet56", "timm"]


def test_all_classification_configs_exist():
    assert set(NAMES) <= {p.stem for p in CONFIG_DIR.glob("*.yaml")}


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_config_builds_and_forwards(name, in_channels):
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg, num_classes=7, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, 7)
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert isinstance(weighted[0], nn.Conv2d) and weighted[0].in_channels == in_channels
    assert isinstance(weighted[-1], nn.Linear) and weighted[-1].out_features == 7


def test_timm_config_name_override_selects_another_architecture():
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "timm.yaml"), OmegaConf.from_dotlist(["name=resnet34"]))
    model = hydra.utils.instantiate(cfg, num_classes=5, in_channels=3)
    assert len(model.layer1) == 3  # ResNet-34 has 3 blocks in its first stage, ResNet-18 has 2


def test_unknown_names_are_one_line_errors():
    with pytest.raises(ValueError, match="not a timm model"):
        timm_model.create("resnet_does_not_exist", num_classes=10, in_channels=3)
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        torchvision_model.create("resnet_does_not_exist", num_classes=10, in_channels=3)


def test_first_conv_is_replaced_as_a_module_not_patched():
    model = torchvision_model.create("mobilenet_v2", num_classes=10, in_channels=3)
    old = model.features[0][0]
    torchvision_model.replace_first_conv(model, 1)
    new = model.features[0][0]
    assert new is not old and type(new) is nn.Conv2d and new.in_channels == 1
    assert (new.out_channels, new.kernel_size, new.stride) == (old.out_channels, old.kernel_size, old.stride)
    assert "forward" not in vars(new) and "forward" not in vars(model)
