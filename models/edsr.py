"""EDSR (Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017).

head: one 3x3 conv to `num_features`; body: `num_blocks` residual blocks conv-ReLU-conv without batch norm
(Fig. 2c: BN removes range flexibility and costs memory), then a 3x3 conv, with a global skip over the body;
tail: sub-pixel upsampler (3x3 conv to r^2 * F channels + PixelShuffle(r), twice for x4) and a 3x3 conv to RGB.
EDSR-baseline is 16 blocks x 64 features, residual scaling 1 (the paper uses 0.1 only for the 32 x 256 model).

The module names `head`, `body`, `tail` match the paper and let the quantization policy pick them by pattern
(configs/task/super_resolution.yaml keeps `head*` and `tail*` in full precision by default).

Inputs are RGB in [0, 1]; the DIV2K mean is subtracted in and added back out as a fixed buffer rather than as
EDSR-PyTorch's frozen `MeanShift` convolutions, which a module swap would otherwise mistake for layers to
quantize. (EDSR-PyTorch feeds [0, 255]; convolutions and ReLU are homogeneous, so only the bias scale differs.)
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

#: Per-channel RGB mean of DIV2K train in [0, 1] (EDSR-PyTorch `rgb_mean`).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)


class ResBlock(nn.Module):
    """x + res_scale * conv2(relu(conv1(x))), no batch norm (EDSR Fig. 2c)."""

    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(features, features)
        self.relu = nn.ReLU()  # not in place: a quantized conv may keep its (pre-ReLU) input for backward
        self.conv2 = conv3x3(features, features)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F, h, w)
        residual = self.conv2(self.relu(self.conv1(x)))
        if self.res_scale != 1.0:
            residual = residual * self.res_scale
        return x + residual


def upsample_factors(scale: int) -> list[int]:
    """Pixel-shuffle stages: x2 -> [2], x3 -> [3], x4 -> [2, 2], x8 -> [2, 2, 2] (as in EDSR-PyTorch)."""
    if isinstance(scale, int) and scale == 3:
        return [3]
    if isinstance(scale, int) and scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"scale={scale!r} is not supported by the sub-pixel upsampler; expected 3 or a power of 2")


class Upsampler(nn.Sequential):
    """Sub-pixel convolution (Shi et al. 2016): conv to r^2 * F channels, then PixelShuffle(r), per stage."""

    def __init__(self, scale: int, features: int) -> None:
        layers: list[nn.Module] = []
        for r in upsample_factors(scale):
            layers += [conv3x3(features, r * r * features), nn.PixelShuffle(r)]
        super().__init__(*layers)


class EDSR(nn.Module):
    """(B, C, h, w) in [0, 1] -> (B, C, scale*h, scale*w), unclamped (the task clamps and rounds for metrics)."""

    def __init__(
        self,
        *,
        scale: int,
        in_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 16,
        res_scale: float = 1.0,
        rgb_mean: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("num_features", num_features, 1),
                                 ("num_blocks", num_blocks, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"model.{name}={value!r}; expected an int >= {low}")
        if not res_scale > 0:
            raise ValueError(f"model.res_scale={res_scale!r}; expected a positive float (1.0 baseline, 0.1 large)")
        if rgb_mean is None:
            rgb_mean = DIV2K_RGB_MEAN if in_channels == 3 else (0.5,) * in_channels
        if len(rgb_mean) != in_channels:
            raise ValueError(f"model.rgb_mean has {len(rgb_mean)} entries; expected in_channels={in_channels}")
        self.scale = scale
        # A constant, not state: kept out of the state dict so checkpoints hold only learned tensors.
        self.register_buffer("mean", torch.tensor(list(rgb_mean)).view(1, in_channels, 1, 1), persistent=False)
        self.head = conv3x3(in_channels, num_features)
        self.body = nn.Sequential(
            *[ResBlock(num_features, res_scale) for _ in range(num_blocks)], conv3x3(num_features, num_features)
        )
        self.tail = nn.Sequential(Upsampler(scale, num_features), conv3x3(num_features, in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w)
        features = self.head(x - self.mean)  # (B, F, h, w)
        features = features + self.body(features)  # global residual over the body
        return self.tail(features) + self.mean  # (B, C, s*h, s*w)
