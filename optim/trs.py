"""Transition-rate scheduling, TRS (Lee, Kim, Jeon, Ham, arXiv 2404.19248; docs/methods.md §3).

Instead of scheduling the learning rate of the latent weights, schedule how many *quantized* weights change per
step. `TransitionRateScheduler` takes the place of the weights' LR scheduler (`optim=sgdt`, `optim=adamt`):

    k_t = (# integer weight codes that changed in step t) / (# quantized weights)        paper Eq. (5)
    K_t = m K_{t-1} + (1 - m) k_t,   m = 0.99                                             Eq. (10)
    R_t = lambda * sqrt(b_w) * (1 + cos(pi t / T)) / 2                                     target, §3.3
    U_t = max(0, U_{t-1} + eta (R_t - K_t))                                                Eq. (11)
    w  <- w - U_t d_t,   d_t the base optimizer's direction (SGD with momentum, Adam)     Eq. (12)

The weight quantizers' scales s_W are frozen (paper footnote 2: a moving s_W would make transitions without any
weight update); the activations' u_A still train. `freeze_weight_scales` does it before the optimizers are built.

`w - U_t d_t` is the base optimizer run with learning rate U_t, so U_t is a 0-dim tensor on the weights' device
that *is* the optimizer's `lr` (fused SGD / AdamW take a tensor lr without a host sync). Everything per step
stays on device; `drain_transition_stats` reads the logged values with one host sync on logging steps.

Unconfirmed in the paper text we could read (docs/methods.md §3.3, §3.4): the target's start lambda * sqrt(b_w)
(`scale_by_bits`, from two summaries of the paper), eta = U_0 (a summary), U_0 itself (the optimizer's `lr`).
`debias` (ours, off by default) reads K bias-corrected; the paper's plain EMA makes U wind up while K warms up,
as its Fig. 3b shows ("U increases initially, since K is much smaller than R").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from quant.forward import WeightQuantizer, weight_grid
from quant.unwrap import unwrap


@dataclass(frozen=True, kw_only=True)
class TRSSpec:
    """The TRS hyper-parameters (docs/methods.md §3): target R_0 = lambda_ (* sqrt(b_w) when scale_by_bits),
    controller gain eta, EMA momentum, whether K is read bias-corrected."""

    lambda_: float
    eta: float
    momentum: float = 0.99
    debias: bool = False
    scale_by_bits: bool = True

    def __post_init__(self):
        if not 0 < self.lambda_ <= 1:
            raise ValueError(f"optim.trs.lambda_={self.lambda_} is invalid: use a target transition rate in (0, 1], "
                             "e.g. 5e-3")
        if not self.eta > 0:
            raise ValueError(f"optim.trs.eta={self.eta} is invalid: use a gain > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"optim.trs.momentum={self.momentum} is invalid: use a value in [0, 1), e.g. 0.99")


def freeze_weight_scales(model: nn.Module) -> None:
    """Stop training every weight quantizer's scale s_W (TRS paper, footnote 2); the activations' u_A still train.
    Call before the optimizers are built, so the intervals' Adam gets only u_A."""
    for _, _, q in quantized_weights(model):
        q.scale.requires_grad_(False)


@torch.no_grad()
def transition_distance(w: Tensor, q: WeightQuantizer) -> Tensor:
    """Mean distance of the latent weights to their nearest transition point, in grid steps (0 to 0.5 inside the
    range, more for saturated weights): the paper's Fig. 3d. Transition points lie half a step between codes."""
    lo, step, levels = weight_grid(q.scale.abs(), q.bits, q.grid)
    t = (w.float() - lo) / step
    return (t - (torch.floor(t) + 0.5).clamp(0.5, levels - 0.5)).abs().mean()


def quantized_weights(model: nn.Module) -> list[tuple[str, Tensor, WeightQuantizer]]:
    """(layer name, weight, its WeightQuantizer) of every layer whose weights are quantized."""
    model = unwrap(model)
    return [(name, m.weight, m.wq) for name, m in model.named_modules() if isinstance(getattr(m, "wq", None),
                                                                                      WeightQuantizer)]


class TransitionCounter:
    """Measures the transitions of the quantized weights step by step, without controlling anything: k_t (Eq. 5),
    its running average K_t (Eq. 10), the per-layer rates and the distance to the nearest transition point.

    Stepped like an LR scheduler, after the optimizers: it compares every quantized layer's integer codes with the
    previous step's. The first step only records the codes. A plain optimizer's run gets one with
    `log_transitions=true` (the paper's Fig. 2b: how many weights flip while the LR decays); TRS's controller,
    TransitionRateScheduler, is one. Under DDP the weights are bit-identical on every rank, so every rank counts
    the same transitions without a collective (docs/methods.md §3.1).

    State (`state_dict`): K, the step counters and the previous codes (uint8: at most 255 values, 8 bits), so a
    resumed run continues exactly.
    """

    def __init__(self, model: nn.Module, *, momentum: float = 0.99, debias: bool = False) -> None:
        self.momentum, self.debias = momentum, debias
        self.layers = quantized_weights(model)
        if not self.layers:
            raise ValueError("optim=sgdt/adamt and log_transitions count quantized weight transitions but no layer has "
                             "quantized weights: set bits / quant.bits.w, or use a plain optim without "
                             "log_transitions")
        if any(q.bits > 8 for _, _, q in self.layers):
            raise ValueError("transitions are counted on uint8 codes: use weight bits <= 8")
        device = self.layers[0][1].device
        self.ema = torch.zeros((), device=device)  # K, not bias-corrected
        self.rate = torch.zeros((), device=device)  # k_t of the last step
        self.window = torch.zeros(len(self.layers), device=device)  # per-layer changes since the last drain
        self.steps = 0  # steps taken (t)
        self.measured = 0  # steps with a measurement (n, for the bias correction)
        self.window_steps = 0
        self.numel = torch.tensor([float(w.numel()) for _, w, _ in self.layers], device=device)
        self.total = float(sum(w.numel() for _, w, _ in self.layers))
        self.previous: list[Tensor] | None = None

    def _codes(self) -> list[Tensor]:
        return [q.codes(w).to(torch.uint8) for _, w, q in self.layers]

    @torch.no_grad()
    def step(self) -> None:
        """Measure k_t against the previous codes and update K (all on device, no host sync)."""
        codes = self._codes()
        if self.previous is not None:
            changed = torch.stack([(c != p).sum() for c, p in zip(codes, self.previous)]).float()  # (L,)
            self.window += changed
            self.window_steps += 1
            self.rate.copy_(changed.sum() / self.total)
            self.ema.mul_(self.momentum).add_(self.rate, alpha=1 - self.momentum)
            self.measured += 1
            self._control()
        self.previous = codes
        self.steps += 1

    def _control(self) -> None:
        """After each measurement: nothing here (TransitionRateScheduler moves U_t)."""

    def running_rate(self) -> Tensor:
        """K_t as the controller reads it: the EMA, bias-corrected when `debias` (docs/methods.md §3.2)."""
        if self.debias and self.measured:
            return self.ema / (1 - self.momentum ** self.measured)
        return self.ema

    def state_dict(self) -> dict:
        return {"ema": self.ema.clone(), "rate": self.rate.clone(), "window": self.window.clone(),
                "steps": self.steps, "measured": self.measured, "window_steps": self.window_steps,
                "previous": None if self.previous is None else [p.clone() for p in self.previous]}

    def load_state_dict(self, state: dict) -> None:
        """Restore in place (the checkpoint is read onto the CPU; our tensors stay on the weights' device)."""
        for name in ("ema", "rate", "window"):
            getattr(self, name).copy_(state[name])
        self.steps, self.measured, self.window_steps = state["steps"], state["measured"], state["window_steps"]
        previous = state["previous"]
        self.previous = None if previous is None else [p.to(self.ema.device) for p in previous]

    def stats(self) -> dict[str, Tensor]:
        """The logged values as device tensors; the per-layer rate is the mean over the steps since the last call.

        Keys: trs/rate (k_t), trs/rate_ema (K_t), TR/<layer>, and the mean distance of the latent weights to their
        nearest transition point (transition_distance): trs/distance over all quantized weights, TD/<layer>.
        """
        per_layer = self.window / (self.numel * max(1, self.window_steps))
        self.window.zero_()
        self.window_steps = 0
        out = {"trs/rate": self.rate, "trs/rate_ema": self.running_rate()}
        out.update({f"TR/{name}": per_layer[i] for i, (name, _, _) in enumerate(self.layers)})
        distance = torch.stack([transition_distance(w, q) for _, w, q in self.layers])  # (L,)
        out["trs/distance"] = (distance * self.numel).sum() / self.total
        out.update({f"TD/{name}": distance[i] for i, (name, _, _) in enumerate(self.layers)})
        return out


class TransitionRateScheduler(TransitionCounter):
    """Drives the weights' optimizer's learning rate U_t so that the running transition rate K_t follows the target
    R_t (module docstring): a TransitionCounter whose every measurement also moves U_t (Eq. 11).

    s_W is frozen (freeze_weight_scales), so only latent weight updates move codes (Eq. 5). A step skipped for
    non-finite gradients measures k = 0 and raises U a little. Every rank computes the same U_t. State: the
    counter's and U_t.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, *, steps_per_epoch: int, epochs: int,
                 lambda_: float, eta: float, momentum: float = 0.99, debias: bool = False,
                 scale_by_bits: bool = True) -> None:
        self.spec = TRSSpec(lambda_=lambda_, eta=eta, momentum=momentum, debias=debias, scale_by_bits=scale_by_bits)
        super().__init__(model, momentum=momentum, debias=debias)
        self.optimizer = optimizer
        bits = max(q.bits for _, _, q in self.layers)  # one weight bit-width per run (QuantSpec)
        self.start = lambda_ * (math.sqrt(bits) if scale_by_bits else 1.0)  # R_0
        self.total_steps = max(1, steps_per_epoch * epochs)
        lr = optimizer.param_groups[0]["lr"]
        self.u = torch.tensor(float(lr), device=self.ema.device)  # U_0: the configured lr (docs/methods.md §3.4)
        self._bind()

    def _bind(self) -> None:
        """Make U_t the optimizer's lr (the same tensor object, so updating U updates the step size)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.u

    def target(self, step: int | None = None) -> float:
        """R_t: cosine decay from R_0 to 0 over the run (docs/methods.md §3.3)."""
        t = self.steps if step is None else step
        return self.start * 0.5 * (1 + math.cos(math.pi * min(1.0, t / self.total_steps)))

    def step(self) -> None:
        self._bind()
        super().step()

    def _control(self) -> None:
        self.u.add_(self.spec.eta * (self.target() - self.running_rate())).clamp_(min=0.0)

    def get_last_lr(self) -> list[Tensor]:
        return [self.u]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "u": self.u.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.u.copy_(state["u"])
        self._bind()

    def stats(self) -> dict[str, Tensor]:
        """TransitionCounter.stats and trs/target (R_t of the last update), trs/U."""
        target = torch.full((), self.target(max(0, self.steps - 1)), device=self.u.device)
        return {"trs/target": target, "trs/U": self.u, **super().stats()}


def drain_transition_stats(schedulers: list) -> dict[str, float]:
    """The values of the schedulers that count transitions (TransitionCounter, TRS's included; none: {}); one host
    sync."""
    stats = {k: v for s in schedulers if isinstance(s, TransitionCounter) for k, v in s.stats().items()}
    if not stats:
        return {}
    return dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist()))
