"""Single-image super-resolution: L1 training loss, PSNR / SSIM on the Y channel (the standard SR protocol).

Loss: mean absolute error between the network output and the HR patch (EDSR, Lim et al. 2017, Sec. 4.2:
L1 converges better than L2 for SR).

Metrics follow the protocol of EDSR-PyTorch / BasicSR for the bicubic benchmarks:
1. quantize the output to 8-bit levels: round(clamp(sr, 0, 1) * 255) (what saving a PNG would do);
2. convert to luma with ITU-R BT.601: Y = 16 + 65.481 R + 128.553 G + 24.966 B for RGB in [0, 1], i.e. Y in
   [16, 235] on the 0..255 scale (not rounded again, as in BasicSR's `to_y_channel`);
3. crop `scale` pixels from every border (bicubic LR carries no information about the outermost pixels);
4. PSNR = 10 log10(255^2 / MSE) per image; SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
   K1 = 0.01, K2 = 0.03, data range 255, valid region) from torchmetrics' SSIM map; both averaged over images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from runtime.extras import MissingExtra
from tasks.reduce import all_reduce_sum

try:
    from torchmetrics.functional.image import structural_similarity_index_measure
except ModuleNotFoundError as e:
    raise MissingExtra("task=super_resolution", e.name, "sr") from e

#: ITU-R BT.601 RGB -> Y weights for RGB in [0, 1] and Y on the 0..255 scale (MATLAB `rgb2ycbcr`).
BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)
SSIM_WINDOW = 11


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) BT.601 luma in [16, 235]."""
    weights = image.new_tensor(BT601_Y_WEIGHTS).view(1, 3, 1, 1)
    return 16.0 + (image * weights).sum(dim=1, keepdim=True)


def quantize_8bit(image: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image, kept in [0, 1]."""
    return image.clamp(0.0, 1.0).mul(255.0).round().div(255.0)


def crop_border(image: torch.Tensor, border: int) -> torch.Tensor:
    """Drop `border` pixels on each side of the last two dims."""
    if border == 0:
        return image
    return image[..., border:-border, border:-border]


def psnr(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 255.0) -> torch.Tensor:
    """Per-image PSNR in dB, (B, ...) -> (B,): 10 log10(data_range^2 / MSE); +inf for identical images."""
    mse = (pred - target).pow(2).flatten(1).mean(dim=1)  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 255.0) -> torch.Tensor:
    """Per-image SSIM, (B, C, H, W) -> (B,): Wang et al. 2004 Gaussian-window SSIM over the valid region.

    torchmetrics reflect-pads the image and averages the SSIM map over the full image; the SR protocol
    (MATLAB `ssim_index`, BasicSR, skimage) averages only where the 11x11 window lies inside the image, so we
    take torchmetrics' map and drop its (window - 1) / 2 border ourselves.
    """
    _, ssim_map = structural_similarity_index_measure(
        pred, target, gaussian_kernel=True, sigma=1.5, kernel_size=SSIM_WINDOW, reduction="none",
        data_range=data_range, k1=0.01, k2=0.03, return_full_image=True,
    )  # (B, C, H, W)
    return crop_border(ssim_map, SSIM_WINDOW // 2).flatten(1).mean(dim=1)


class SuperResolutionTask:
    """Batches are (lr (B, C, h, w), hr (B, C, s*h, s*w)) float in [0, 1]; test batches hold one image each.

    y_only: measure on BT.601 luma (standard) or on all RGB channels (some DIV2K validation tables).
    crop_border: pixels cut from each side before measuring; None means the scale factor (standard).
    """

    metric = "psnr"

    def __init__(self, *, y_only: bool = True, crop_border: int | None = None) -> None:
        if crop_border is not None and (not isinstance(crop_border, int) or crop_border < 0):
            raise ValueError(f"task.crop_border={crop_border!r}; expected null (= scale) or an int >= 0")
        self.y_only = y_only
        self.crop_border = crop_border

    def to_device(self, batch, device):
        lr, hr = batch
        return lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)

    def batch_size(self, batch) -> int:
        return batch[0].shape[0]

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        lr, hr = batch
        return F.l1_loss(model(lr), hr)

    def measured(self, image: torch.Tensor, border: int) -> torch.Tensor:
        """What the metrics see: 8-bit levels, luma (or RGB) on the 0..255 scale, border cropped."""
        image = quantize_8bit(image)
        if self.y_only:
            if image.shape[1] != 3:
                raise ValueError(f"y_only needs RGB images; got {image.shape[1]} channels: set task.y_only=false")
            image = rgb_to_y(image)
        else:
            image = image * 255.0
        return crop_border(image, border)

    def evaluate(self, model: nn.Module, loader, device) -> dict[str, float]:
        """Means over all test images: under DDP `loader` is this rank's shard and the sums are all-reduced.

        Every rank must call it (one collective) and gets the same result; a rank with an empty shard is fine.
        """
        # Sums stay on device; one host sync at the end.
        psnr_sum = torch.zeros((), device=device)
        ssim_sum = torch.zeros((), device=device)
        loss_sum = torch.zeros((), device=device)
        count = 0
        for batch in loader:
            lr, hr = self.to_device(batch, device)
            sr = model(lr).float()  # (B, C, s*h, s*w)
            if sr.shape != hr.shape:
                raise ValueError(f"model output {tuple(sr.shape)} != HR {tuple(hr.shape)}: does model.scale match data?")
            loss_sum += (sr - hr).abs().flatten(1).mean(dim=1).sum()  # per-image L1, like the training loss
            border = hr.shape[-1] // lr.shape[-1] if self.crop_border is None else self.crop_border
            pred, target = self.measured(sr, border), self.measured(hr, border)
            if min(pred.shape[-2:]) < SSIM_WINDOW:
                raise ValueError(f"test image {tuple(hr.shape[-2:])} minus a {border}-pixel border is below SSIM's "
                                 f"{SSIM_WINDOW}x{SSIM_WINDOW} window; use larger test images")
            psnr_sum += psnr(pred, target).sum()
            ssim_sum += ssim(pred, target).sum()
            count += hr.shape[0]
        sums = all_reduce_sum(torch.stack([psnr_sum, ssim_sum, loss_sum, torch.tensor(float(count), device=device)]))
        psnr_mean, ssim_mean, loss, total = torch.cat([sums[:3] / sums[3], sums[3:]]).tolist()  # the one host sync
        if total == 0:
            raise ValueError("the evaluation loader is empty: check the test split of the dataset")
        return {"psnr": psnr_mean, "ssim": ssim_mean, "loss": loss}
