"""CIFAR ResNet-20/32/56 (He et al., "Deep Residual Learning", CVPR 2016, Sec. 4.2).

Three stages of n BasicBlocks at 16/32/64 channels on 32x32 inputs (depth 6n+2: n=3, 5, 9). Down-sampling
shortcuts use option A of the paper (stride-2 subsampling + zero-padded channels, no parameters), as in the
LBT official code (cvlab-yonsei/LBT, models/resnet20.py) and the paper's own CIFAR experiments; this is why
ResNet-20 has 0.27M parameters. Weights use Kaiming-normal init, as in that code.

The LBT official code also puts a BatchNorm1d on the pooled features before the classifier; `head_bn=True`
reproduces that (default off = He et al.'s network).

Only plain nn.Conv2d / nn.Linear layers are used, so `quant.quantize_` can swap them in place; the stem is the
first module (`conv1`) and the classifier the last (`fc`), which is how the quantizer finds the layers it keeps
in full precision.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.width_groups import WidthGroup
from models.widths import apply_widths


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every second pixel and zero-pad the new channels (He et al. 2016, Sec. 4.2)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride, self.in_planes, self.planes = stride, in_planes, planes  # a width search may reset both

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x[:, :, ::s, ::s] as a depthwise 1x1 convolution with unit weights (float32 even under autocast): the
        # same values, but a backward in x's memory format. The slice's backward (zeros, then a scatter) is NCHW,
        # and under torch.compile each stage's residual gradient then stayed NCHW, transposed on every read.
        # in_planes, not x.shape[1]: a traced graph (ONNX export) then has a kernel of known shape.
        with torch.autocast(x.device.type, enabled=False):
            ones = torch.ones(self.in_planes, 1, 1, 1, device=x.device, dtype=x.dtype)
            x = F.conv2d(x, ones, None, self.stride, 0, 1, self.in_planes)  # (B, C_in, H/s, W/s)
        front = (self.planes - self.in_planes) // 2  # negative (a crop) when a searched stage is narrower
        return F.pad(x, (0, 0, 0, 0, front, self.planes - self.in_planes - front))  # (B, C_out, H/s, W/s)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = PadShortcut(in_planes, planes, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """Stem conv 3x3 (16) -> 3 stages x `blocks` BasicBlocks (16, 32, 64; stride 1, 2, 2) -> avg pool -> fc.

    `stage_widths` replaces (16, 32, 64) and `widths` sets each block's inner width (both e.g. found by the NCE
    search, models/widths.py)."""

    def __init__(self, *, blocks: int, num_classes: int = 10, in_channels: int = 3, head_bn: bool = False,
                 widths: list[int] | None = None, stage_widths: list[int] | None = None) -> None:
        super().__init__()
        for key, value in (("blocks", blocks), ("num_classes", num_classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ResNetCifar {key}={value!r}; expected a positive int")
        stage_widths = list(stage_widths) if stage_widths is not None else [16, 32, 64]
        if len(stage_widths) != 3 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in stage_widths):
            raise ValueError(f"model.stage_widths={stage_widths} is invalid: give 3 positive integers, one per stage")
        self.blocks, self.has_head_bn = blocks, head_bn
        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        stages, in_planes = [], stage_widths[0]
        for planes, stride in zip(stage_widths, (1, 2, 2)):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.head_bn = nn.BatchNorm1d(in_planes) if head_bn else nn.Identity()
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        if widths is not None:  # each block's inner width (conv1 -> conv2), e.g. found by the NCE search
            apply_widths(self, widths)

    def stage_width_groups(self) -> list[WidthGroup]:
        """Each stage's width is one tied group (docs/methods.md §2.1): the stem (stage 1) and every block's conv2
        write it; every block's conv1 in the stage, the next stage's first conv1 and the classifier read it; the
        option-A shortcuts into and out of the stage pad to it. Not with head_bn (a BatchNorm1d it would resize)."""
        if self.has_head_bn:
            return []
        groups = []
        for s in range(1, 4):
            blocks = [f"layer{s}.{i}" for i in range(self.blocks)]
            readers = [f"{b}.conv1" for b in blocks[1 if s > 1 else 0:]] + ([f"layer{s + 1}.0.conv1"] if s < 3 else ["fc"])
            groups.append(WidthGroup(
                f"stage{s}", tuple((["conv1"] if s == 1 else []) + [f"{b}.conv2" for b in blocks]),
                tuple((["bn1"] if s == 1 else []) + [f"{b}.bn2" for b in blocks]), tuple(readers), "stage_widths",
                pad_inputs=(f"layer{s + 1}.0.shortcut",) if s < 3 else (), pad_outputs=(f"{blocks[0]}.shortcut",) if s > 1 else ()))
        return groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 64, H/4, W/4)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 64)
        return self.fc(self.head_bn(out))  # (B, num_classes)


def resnet20(num_classes: int = 10, in_channels: int = 3, head_bn: bool = False,
             widths: list[int] | None = None, stage_widths: list[int] | None = None) -> ResNetCifar:
    """ResNet-20 (n=3), 0.27M parameters; the LBT paper's CIFAR-100 model."""
    return ResNetCifar(blocks=3, num_classes=num_classes, in_channels=in_channels, head_bn=head_bn,
                       widths=widths, stage_widths=stage_widths)


def resnet32(num_classes: int = 10, in_channels: int = 3, head_bn: bool = False,
             widths: list[int] | None = None, stage_widths: list[int] | None = None) -> ResNetCifar:
    """ResNet-32 (n=5), 0.46M parameters."""
    return ResNetCifar(blocks=5, num_classes=num_classes, in_channels=in_channels, head_bn=head_bn,
                       widths=widths, stage_widths=stage_widths)


def resnet56(num_classes: int = 10, in_channels: int = 3, head_bn: bool = False,
             widths: list[int] | None = None, stage_widths: list[int] | None = None) -> ResNetCifar:
    """ResNet-56 (n=9), 0.85M parameters."""
    return ResNetCifar(blocks=9, num_classes=num_classes, in_channels=in_channels, head_bn=head_bn,
                       widths=widths, stage_widths=stage_widths)
