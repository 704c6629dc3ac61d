"""The NCE supernet (docs/methods.md §2): each free width becomes a ladder of candidate widths mixed by architecture
logits (WidthChoice, WidthMixture); search/nce.py trains the logits and reads the found widths back."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from models.widths import set_width, width_pairs


def candidate_ladder(width: int, ratios, expand_step: float, max_ratio: float) -> tuple[list[int], int]:
    """(ladder, active): the candidate widths of a layer `width` wide, ascending and distinct, and how many of them
    are active at the start (those from `ratios`); the rest are the expansion candidates up to `max_ratio`."""
    start = sorted({max(1, round(r * width)) for r in ratios})
    extra, r = [], max(ratios) + expand_step
    while r <= max_ratio + 1e-9:
        w = max(1, round(r * width))
        if w > (extra[-1] if extra else start[-1]):
            extra.append(w)
        r += expand_step
    return start + extra, len(start)


class WidthChoice(nn.Module):
    """The architecture logits of one free width over its candidate ladder; candidates past `active` are masked out."""

    def __init__(self, ladder: list[int], active: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(len(ladder)))
        self.register_buffer("widths", torch.tensor(ladder, dtype=torch.float32))  # (K,)
        self.register_buffer("active", torch.tensor(active))  # a tensor: expansion changes no compiled graph
        channels = torch.arange(ladder[-1], dtype=torch.float32)
        self.register_buffer("steps", (channels[None, :] < self.widths[:, None]).float())  # (K, C): [c < C_j]

    def probs(self) -> Tensor:
        live = torch.arange(self.logits.numel(), device=self.logits.device) < self.active
        return F.softmax(self.logits.masked_fill(~live, float("-inf")), dim=0)  # (K,), zero past `active`

    def mask(self) -> Tensor:
        """(C,) channel weights sum_j p_j [c < C_j]: channel-wise interpolation of the candidates' zero-padded outputs."""
        return self.probs() @ self.steps

    def expected_width(self) -> Tensor:
        return self.probs() @ self.widths

    def argmax_width(self) -> int:
        return int(self.widths[int(self.probs().argmax())])


class WidthMixture(nn.Module):
    """Replaces a free width's BatchNorm: BN, then the interpolation mask (before the activation: the mask is >= 0,
    so relu(m * y) = m * relu(y)). The block's forward is untouched, which is why any ResNet family works."""

    def __init__(self, bn: nn.BatchNorm2d, choice: WidthChoice) -> None:
        super().__init__()
        self.bn, self.choice = bn, choice

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x) * self.choice.mask().to(x.dtype).view(1, -1, 1, 1)


def to_supernet(model: nn.Module, *, ratios, expand_step: float, max_ratio: float) -> dict[str, WidthChoice]:
    """Rebuild every free width of `model` at its ladder's widest candidate behind a WidthMixture, in place.

    Returns {producing conv's name: its WidthChoice}, in module order.
    """
    choices = {}
    for pair in width_pairs(model):
        conv, _, _ = pair.modules(model)
        ladder, active = candidate_ladder(conv.out_channels, ratios, expand_step, max_ratio)
        set_width(model, pair, ladder[-1])
        block = model.get_submodule(pair.block)
        choices[pair.name] = WidthChoice(ladder, active)
        setattr(block, f"bn{pair.index}", WidthMixture(getattr(block, f"bn{pair.index}"), choices[pair.name]))
    if not choices:
        raise ValueError(f"search=nce found no free width in {type(model).__name__}: it searches residual blocks with "
                         f"conv_i -> bn_i -> conv_(i+1) (CIFAR ResNets, timm/torchvision ResNets)")
    return choices


def architecture_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The NCE logits: trained on the held-out split by NceSearch, never by the weights' optimizer."""
    return [m.logits for m in model.modules() if isinstance(m, WidthChoice)]
