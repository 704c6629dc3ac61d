"""SR metrics against closed forms and skimage, the evaluation protocol (8-bit, Y, border), and a short training."""
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from skimage.metrics import structural_similarity
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from data.sr_skimage import build
from models.edsr import EDSR
from tasks.super_resolution import SuperResolutionTask, psnr, rgb_to_y, ssim

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class NearestPlus(nn.Module):
    """A stand-in SR model: nearest-neighbour upsampling plus a fixed output perturbation."""

    def __init__(self, scale: int, delta: torch.Tensor | float = 0.0):
        super().__init__()
        self.scale, self.delta = scale, delta

    def forward(self, lr):
        return F.interpolate(lr, scale_factor=self.scale, mode="nearest") + self.delta


def _pairs(scale=2, n=2, size=(20, 24), seed=0, high=256):
    """Test-loader-like list of (lr, hr) with HR exactly the nearest upsampling of 8-bit LR below `high`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lr = torch.randint(0, high, (1, 3, *size), generator=g).float() / 255
        out.append((lr, F.interpolate(lr, scale_factor=scale, mode="nearest")))
    return out


def test_bt601_luma_maps_black_and_white_to_16_and_235():
    y = rgb_to_y(torch.stack([torch.zeros(3, 1, 1), torch.ones(3, 1, 1)]))
    assert torch.allclose(y.flatten(), torch.tensor([16.0, 235.0]), atol=1e-4)


def test_constant_offset_gives_the_closed_form_psnr():
    # +3 grey levels in R, G and B moves Y by 3 * 219 / 255 everywhere: PSNR = 20 log10(255 / that).
    offset = 3 / 255
    loader = _pairs(high=253)  # hr + offset stays inside [0, 1]
    metrics = SuperResolutionTask().evaluate(NearestPlus(2, offset), loader, torch.device("cpu"))
    expected = 20 * torch.log10(torch.tensor(255 / (3 * 219 / 255))).item()
    assert metrics["psnr"] == pytest.approx(expected, abs=1e-3)
    assert metrics["loss"] == pytest.approx(offset, rel=1e-4)
    assert set(metrics) == {"psnr", "ssim", "loss"}


def test_ssim_of_identical_images_is_one_and_psnr_infinite():
    x = rgb_to_y(torch.rand(2, 3, 32, 32))
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert bool(torch.isinf(psnr(x, x)).all())


def test_ssim_matches_skimage_on_the_valid_region_not_torchmetrics_full_image_mean():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (1, 1, 48, 40), generator=g).double()
    b = (a + 40 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 255).round()
    reference = structural_similarity(a[0, 0].numpy(), b[0, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255)
    assert ssim(a, b).item() == pytest.approx(reference, abs=1e-9)
    full_mean = structural_similarity_index_measure(a, b, data_range=255.0).item()
    assert abs(full_mean - reference) > 1e-4  # the padded border would bias it


def test_errors_inside_the_scale_border_are_not_measured():
    scale = 3
    delta = torch.zeros(1, 3, 60, 72)
    delta[..., :scale, :] = delta[..., -scale:, :] = delta[..., :, :scale] = delta[..., :, -scale:] = 0.3
    loader = _pairs(scale=scale)
    model = NearestPlus(scale, delta)
    assert SuperResolutionTask().evaluate(model, loader, torch.device("cpu"))["psnr"] == float("inf")
    assert SuperResolutionTask(crop_border=0).evaluate(model, loader, torch.device("cpu"))["psnr"] < 40


def test_output_is_clamped_and_rounded_to_8_bit_before_measuring():
    loader = _pairs()
    # 0.4 grey levels of error round away; values above 1 clamp to the white HR pixels.
    model = NearestPlus(2, 0.4 / 255)
    assert SuperResolutionTask().evaluate(model, loader, torch.device("cpu"))["psnr"] == float("inf")
    white = [(torch.ones_like(lr), torch.ones_like(hr)) for lr, hr in loader]
    assert SuperResolutionTask().evaluate(NearestPlus(2, 0.5), white, torch.device("cpu"))["psnr"] == float("inf")


def test_rgb_mode_measures_every_channel():
    # An error in the blue channel alone: RGB PSNR sees all of it, Y PSNR only 24.966/255 of it.
    delta = torch.zeros(1, 3, 40, 48)
    delta[:, 2] = 10 / 255
    loader = _pairs(high=246)
    y = SuperResolutionTask().evaluate(NearestPlus(2, delta), loader, torch.device("cpu"))["psnr"]
    rgb = SuperResolutionTask(y_only=False).evaluate(NearestPlus(2, delta), loader, torch.device("cpu"))["psnr"]
    assert rgb == pytest.approx(10 * torch.log10(torch.tensor(255**2 / (100 / 3))).item(), abs=1e-3)
    assert y == pytest.approx(20 * torch.log10(torch.tensor(255 / (10 * 24.966 / 255))).item(), abs=1e-3)


def test_scale_mismatch_between_model_and_data_is_reported():
    with pytest.raises(ValueError, match="model.scale"):
        SuperResolutionTask().evaluate(NearestPlus(3), _pairs(scale=2), torch.device("cpu"))


def test_tiny_edsr_trains_on_skimage_patches_and_evaluates():
    torch.manual_seed(0)
    bundle = build(lr_patch_size=12, batch_size=4, patches_per_epoch=4, train_images=["moon", "text"],
                   test_images=["coins"])
    model = EDSR(**bundle.model_kwargs, num_features=8, num_blocks=2)
    task = SuperResolutionTask()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = task.to_device(next(iter(bundle.train)), torch.device("cpu"))
    losses = []
    for _ in range(6):  # a few steps on one batch: the L1 loss must go down
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    with torch.no_grad():
        metrics = task.evaluate(model.eval(), bundle.test, torch.device("cpu"))
    assert all(torch.isfinite(torch.tensor(list(metrics.values()))))
    assert 0 < metrics["ssim"] <= 1 and metrics["psnr"] > 0


def test_task_config_keeps_exactly_the_head_and_tail_in_full_precision():
    cfg = OmegaConf.load(CONFIG_DIR / "task" / "super_resolution.yaml")
    assert cfg.task._target_ == "tasks.super_resolution.SuperResolutionTask"
    assert {"override /data": "skimage_sr"} in cfg.defaults and {"override /model": "edsr_tiny"} in cfg.defaults
    convs = [n for n, m in EDSR(scale=4, num_features=8, num_blocks=2).named_modules() if isinstance(m, nn.Conv2d)]
    kept = [n for n in convs if any(fnmatch(n, p) for p in cfg.quant.keep_fp)]
    assert kept == [n for n in convs if not n.startswith("body")] and len(kept) < len(convs)


def test_quantized_tiny_edsr_trains_at_8_8_8_with_head_and_tail_in_full_precision():
    from quant.convert import quantize_
    from quant.spec import QuantSpec

    torch.manual_seed(0)
    keep_fp = tuple(OmegaConf.load(CONFIG_DIR / "task" / "super_resolution.yaml").quant.keep_fp)
    model = quantize_(EDSR(scale=2, num_features=8, num_blocks=2), QuantSpec(w_bits=8, a_bits=8, g_bits=8,
                                                                            keep_fp=keep_fp))
    kinds = {n: type(m) for n, m in model.named_modules() if n.count(".") < 3 and "Conv" in type(m).__name__}
    assert all((kind is nn.Conv2d) == (not name.startswith("body")) for name, kind in kinds.items())
    lr, hr = _pairs(n=1, size=(12, 12))[0]
    batch = (lr.expand(4, -1, -1, -1), hr.expand(4, -1, -1, -1))
    task, optimizer = SuperResolutionTask(), torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
