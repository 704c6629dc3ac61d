"""The NCE supernet (docs/methods.md §2): each free width becomes a ladder of candidate widths mixed by architecture
logits (WidthChoice), as TAS mixes them (Dong & Yang, NeurIPS 2019; NCE, Park et al. 2022, builds on it):
CandidateMixture samples two candidates per step, gives each its own BatchNorm and resamples it by channel-wise
interpolation (default); WidthMixture is the zero-padding alternative kept for comparison (search.alignment).
search/nce.py trains the logits and reads the found widths back."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from models.width_groups import group_width, set_group_width, width_groups


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

    def __init__(self, ladder: list[int], active: int, init_std: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        # TAS: logits ~ N(0, 0.01) (nn.init.normal_(..., 0, 0.01)); 0 gives exact ties (the old start)
        self.logits = nn.Parameter(torch.randn(len(ladder), generator=generator) * init_std)
        self.register_buffer("tau", torch.tensor(1.0))  # the Gumbel-softmax temperature, set by NceSearch each step
        # Exp(1) draws behind one sample (refresh(): once per forward, by NceSearch): every layer of a tied group
        # computes the same two candidates from them, and so does a compiled graph (no RNG inside it)
        self.register_buffer("noise", torch.empty(2, len(ladder)).exponential_(generator=generator))
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

    def argmax_width_tensor(self) -> Tensor:
        """The most probable active width as a tensor (no host sync: the cost loss reads it every step)."""
        return self.widths.gather(0, self.probs().argmax().view(1)).squeeze(0)  # a 0-d index would be read as an int

    def sample(self) -> tuple[Tensor, Tensor]:
        """(indices (2,), weights (2,)): TAS's select2withP. Gumbel-perturbed log-probabilities over the active
        candidates at temperature tau, two of them drawn without replacement in proportion to their softmax (the
        Gumbel-top-2 trick, the same law as TAS's torch.multinomial(probs + 1e-7, 2) and no host sync), and the
        weights: the softmax of the two perturbed logits. Gradients reach the logits through the weights."""
        live = torch.arange(self.logits.numel(), device=self.logits.device) < self.active
        log_p = F.log_softmax(self.logits.masked_fill(~live, float("-inf")), dim=0)
        perturbed = (log_p - self.noise[0].log()) / self.tau
        probs = F.softmax(perturbed, dim=0).detach()
        keys = torch.where(live, (probs + 1e-7).log() - self.noise[1].log(), float("-inf"))
        picked = keys.topk(2).indices
        return picked, F.softmax(perturbed[picked], dim=0)

    @torch.no_grad()
    def refresh(self) -> None:
        """A new draw for the next forward."""
        self.noise.exponential_()

    def current_width(self) -> Tensor:
        """The width the group's layers output now: the wider sampled candidate (training), the argmax (evaluation)."""
        return self.widths[self.sample()[0]].max() if self.training else self.argmax_width_tensor()


class WidthMixture(nn.Module):
    """Replaces a free width's BatchNorm: BN, then the interpolation mask (before the activation: the mask is >= 0,
    so relu(m * y) = m * relu(y)). The block's forward is untouched, which is why any ResNet family works."""

    def __init__(self, bn: nn.BatchNorm2d, choice: WidthChoice) -> None:
        super().__init__()
        self.bn, self.choice = bn, choice

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x) * self.choice.mask().to(x.dtype).view(1, -1, 1, 1)


def cwi_matrix(c_in: Tensor, c_out: Tensor, width: int) -> Tensor:
    """(width, width) matrix of TAS's channel-wise interpolation (ChannelWiseInter: adaptive average pooling over
    channels) from the first c_in channels to the first c_out: output channel o < c_out averages input channels
    floor(o c_in / c_out) .. ceil((o + 1) c_in / c_out) - 1; rows from c_out and columns from c_in are zero."""
    o = torch.arange(width, device=c_in.device)
    start = torch.div(o * c_in, c_out, rounding_mode="floor")
    end = torch.div((o + 1) * c_in + c_out - 1, c_out, rounding_mode="floor")  # ceil
    inside = (o[None, :] >= start[:, None]) & (o[None, :] < end[:, None]) & (o[:, None] < c_out)
    return inside.float() / (end - start).clamp_min(1)[:, None].float()


class CandidateMixture(nn.Module):
    """Replaces a free width's BatchNorm with TAS's mixture: per step two sampled candidates j (WidthChoice.sample),
    each normalised by its own BatchNorm over its first C_j channels, resampled by channel-wise interpolation to
    the wider one's width and summed with the sampled weights; zero past it (the next conv sees the wider
    candidate's width, as TAS slices its weights). In evaluation the most probable candidate alone: the network the
    search hands back. Every BatchNorm is an affine map per channel, so the whole mixture is one 1x1 map over
    channels (M, b), built from the sampled pair without host syncs."""

    def __init__(self, bn: nn.BatchNorm2d, choice: WidthChoice) -> None:
        super().__init__()
        k, width = choice.widths.numel(), bn.num_features
        self.choice, self.eps, self.momentum = choice, bn.eps, bn.momentum if bn.momentum is not None else 0.1
        weight = bn.weight.detach() if bn.affine else torch.ones(width)
        bias = bn.bias.detach() if bn.affine else torch.zeros(width)
        self.weight = nn.Parameter(weight.repeat(k, 1))  # (K, width): candidate j's BatchNorm in row j
        self.bias = nn.Parameter(bias.repeat(k, 1))
        self.register_buffer("running_mean", bn.running_mean.detach().repeat(k, 1))
        self.register_buffer("running_var", bn.running_var.detach().repeat(k, 1))

    def forward(self, x: Tensor) -> Tensor:
        choice, width = self.choice, x.shape[1]
        if self.training:
            picked, weights = choice.sample()
            dims = [0, 2, 3]
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            with torch.no_grad():  # only the sampled candidates' statistics move (TAS runs only their BNs)
                n = x.numel() / width
                hit = torch.zeros_like(choice.widths, dtype=torch.bool).index_fill(0, picked, True)[:, None]
                m = self.momentum
                self.running_mean.copy_(torch.where(hit, (1 - m) * self.running_mean + m * mean, self.running_mean))
                self.running_var.copy_(torch.where(hit, (1 - m) * self.running_var + m * var * n / max(n - 1, 1),
                                                   self.running_var))
            mean, var = mean.expand(2, width), var.expand(2, width)
        else:
            picked = choice.probs().argmax().expand(2)
            weights = torch.tensor([1.0, 0.0], device=x.device)
            mean, var = self.running_mean[picked], self.running_var[picked]
        sizes = choice.widths[picked].long()
        resample = torch.stack([cwi_matrix(c, sizes.max(), width) for c in sizes])  # (2, width, width)
        scale = self.weight[picked] * torch.rsqrt(var + self.eps)  # (2, width)
        shift = self.bias[picked] - mean * scale
        matrix = torch.einsum("j,joc,jc->oc", weights, resample, scale)
        offset = torch.einsum("j,joc,jc->o", weights, resample, shift)
        return F.conv2d(x, matrix.to(x.dtype)[:, :, None, None], offset.to(x.dtype))


class SearchPadShortcut(nn.Module):
    """An option-A shortcut (models.resnet_cifar.PadShortcut) between two searched stages: the input's first a
    channels land (b - a) // 2 further on, a and b the two stages' current widths, as the found network's
    PadShortcut pads (or crops) them; built at the supernet's widths, so the shift is a tensor."""

    def __init__(self, shortcut: nn.Module, source: WidthChoice, target: WidthChoice) -> None:
        super().__init__()
        self.shortcut, self.source, self.target = shortcut, source, target

    def forward(self, x: Tensor) -> Tensor:
        shortcut, planes = self.shortcut, self.shortcut.planes
        with torch.autocast(x.device.type, enabled=False):  # PadShortcut's subsampling, before its padding
            ones = torch.ones(shortcut.in_planes, 1, 1, 1, device=x.device, dtype=x.dtype)
            x = F.conv2d(x, ones, None, shortcut.stride, 0, 1, shortcut.in_planes)
        a, b = self.source.current_width().long(), self.target.current_width().long()
        index = torch.arange(planes, device=x.device) - torch.div(b - a, 2, rounding_mode="floor")
        keep = (index >= 0) & (index < a)
        return x[:, index.clamp(0, x.shape[1] - 1)] * keep.to(x.dtype).view(1, -1, 1, 1)


def to_supernet(model: nn.Module, *, ratios, expand_step: float, max_ratio: float, alignment: str = "cwi",
                init_std: float = 0.0, seed: int = 0, space: str = "all") -> dict[str, WidthChoice]:
    """Rebuild every searchable width of `model` (models.widths.width_groups: the free widths, then with
    space="all" the residual stages the model declares) at its ladder's widest candidate, each BatchNorm after it
    behind a CandidateMixture (alignment "cwi") or a WidthMixture ("zero_pad", free widths only), in place; one
    WidthChoice per group, shared by its layers; logits ~ N(0, init_std) from `seed`.

    Returns {group name: its WidthChoice}, in width_groups order.
    """
    if alignment not in ("cwi", "zero_pad"):
        raise ValueError(f"search.alignment={alignment} is invalid: use cwi (TAS's channel-wise interpolation, two "
                         f"sampled candidates, one BatchNorm each) or zero_pad (every candidate, one BatchNorm)")
    if space not in ("all", "inner"):
        raise ValueError(f"search.space={space} is invalid: use all (free widths and residual stages) or inner")
    if alignment == "zero_pad" and space == "all" and len(width_groups(model, "all")) > len(width_groups(model, "inner")):
        raise ValueError("search.alignment=zero_pad searches the free widths only: add search.space=inner")
    mixture = CandidateMixture if alignment == "cwi" else WidthMixture
    generator = torch.Generator().manual_seed(seed)
    choices, groups = {}, width_groups(model, space)
    for group in groups:
        width = group_width(model, group)
        ladder, active = candidate_ladder(width, ratios, expand_step, max_ratio)
        if alignment == "cwi" and active < 2:
            raise ValueError(f"search.ratios={list(ratios)} give {width}-wide {group.name} one candidate: "
                             f"TAS samples two, give at least two distinct widths")
        set_group_width(model, group, ladder[-1])
        choice = choices[group.name] = WidthChoice(ladder, active, init_std, generator)
        for name in group.norms:
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent) if parent else model
            setattr(holder, child, mixture(getattr(holder, child), choice))
    for name in {n for g in groups for n in g.pad_inputs}:  # a shortcut from one searched stage into the next
        source = next(choices[g.name] for g in groups if name in g.pad_inputs)
        target = next(choices[g.name] for g in groups if name in g.pad_outputs)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SearchPadShortcut(model.get_submodule(name), source, target))
    if not choices:
        raise ValueError(f"search=nce found no free width in {type(model).__name__}: it searches residual blocks with "
                         f"conv_i -> bn_i -> conv_(i+1) and their stages (CIFAR, timm and torchvision ResNets) and "
                         f"inverted residual blocks (MobileNetV2)")
    return choices


def architecture_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The NCE logits: trained on the held-out split by NceSearch, never by the weights' optimizer."""
    return [m.logits for m in model.modules() if isinstance(m, WidthChoice)]


def set_temperature(choices, tau: float) -> None:
    for choice in choices:
        choice.tau.fill_(tau)


def refresh(choices) -> None:
    """New candidate draws for the next forward, the same for every layer of a group."""
    for choice in choices:
        choice.refresh()
