"""EDSR: paper-sized parameter counts, exact upscaling shapes, head/body/tail names and no batch norm."""
from fnmatch import fnmatch
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from models.edsr import EDSR

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("scale, millions", [(2, 1.37), (3, 1.55), (4, 1.52)])
def test_baseline_has_the_parameter_count_of_the_paper(scale, millions):
    # Lim et al. 2017, Table 1 / EDSR-PyTorch: EDSR-baseline x2/x3/x4 has 1.37M / 1.55M / 1.52M parameters.
    model = hydra.utils.instantiate(OmegaConf.load(CONFIG_DIR / "model" / "edsr_baseline.yaml"), scale=scale,
                                    in_channels=3)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiny_upscales_odd_sizes_exactly(scale):
    model = hydra.utils.instantiate(OmegaConf.load(CONFIG_DIR / "model" / "edsr_tiny.yaml"), scale=scale,
                                    in_channels=3)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 7, 9))
    assert out.shape == (2, 3, 7 * scale, 9 * scale) and bool(torch.isfinite(out).all())


def test_every_conv_lives_in_head_body_or_tail_and_there_is_no_batch_norm():
    model = EDSR(scale=4, num_features=8, num_blocks=2)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs[0] == "head" and convs[-1] == "tail.1"
    assert all(fnmatch(n, "head*") or fnmatch(n, "body*") or fnmatch(n, "tail*") for n in convs)
    assert sum(fnmatch(n, "tail*") for n in convs) == 3  # two x2 sub-pixel stages + output conv
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert "mean" not in model.state_dict()  # the mean shift is a constant, not a learned tensor


def test_zero_body_and_tail_gives_the_mean_image():
    # With every conv zeroed, the global skip and the mean shift leave exactly the DIV2K mean colour.
    model = EDSR(scale=2, num_features=4, num_blocks=1)
    for p in model.parameters():
        nn.init.zeros_(p)
    out = model(torch.rand(1, 3, 5, 5))
    assert torch.allclose(out, model.mean.expand_as(out))


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": 5}, "scale=5"), ({"scale": 2, "num_features": 0}, "num_features=0"),
    ({"scale": 2, "in_channels": 1, "rgb_mean": (0.4, 0.4, 0.4)}, "rgb_mean"), ({"scale": 2, "res_scale": 0}, "res_scale"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        EDSR(**kwargs)
    assert "\n" not in str(err.value)
