"""Neural channel expansion (NCE): a differentiable search over per-layer widths under uniform low-bit quantization.

docs/methods.md §2 (Park et al., arXiv 2212.10878). `search=nce` turns the built model into a supernet before it
is quantized, and the trainer calls `NceSearch.step` after every weight step:

- every free width (models/widths.py: a block's inner conv_i -> conv_{i+1} width) gets a ladder of candidate widths
  (`ratios` x the original width, then `expand_step` increments up to `max_ratio`); the layer is built at the ladder's
  widest width; with `alignment=cwi` (TAS, the default) each step samples two active candidates by Gumbel-softmax
  at temperature tau (linear from `tau_max` to `tau_min` over the epochs), normalises each with its own BatchNorm,
  resamples it by channel-wise interpolation and sums them with the sampled weights (supernet.CandidateMixture);
  `alignment=zero_pad` mixes every candidate zero-padded behind one BatchNorm (WidthMixture); logits ~ N(0, init_std);
- weights train on the training split with the trainer's own step; the logits train on a held-out split of it
  (first-order bilevel: one Adam step per weight step, after `warmup_epochs`) on `L_task + flops_weight * L_macs +
  params_weight * L_params`. `budget_mode=two_sided` (TAS): L = +log(E/budget) while the argmax network is over the
  budget, -log(E/budget) while it is under budget x (1 - tolerance), 0 inside; `at_most` relu(E/budget - 1),
  `match` |E/budget - 1|. E[.] is exact under the independent softmaxes (search.cost.ExpectedCost), the budgets
  `budget` x the original network's;
- expansion: every `check_every` steps, a layer whose widest active candidate has probability > `threshold` gets
  the next ladder width as a new candidate (its logit starts equal to the widest one's: the mass is split);
- at the end the argmax widths, narrowed while over budget (the most probable narrower step first), are handed back
  (search.found.FoundNetwork) and the trainer writes them as a model config: `<run_dir>/found_model.yaml` and
  `configs/model/<export_name>.yaml`, trained with `model=<export_name>`.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from models.width_groups import current_widths, width_groups
from models.widths import count_cost
from search.cost import ExpectedCost
from search.found import FoundNetwork, export_path
from search.supernet import architecture_parameters, refresh, set_temperature, to_supernet

log = logging.getLogger(__name__)
class NullSearch:
    """No architecture search (the default): the trainer's hooks do nothing."""

    def step(self, step_model, task, step: int) -> None:
        pass

    def stats(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def finish(self) -> None:
        return None


class NceSearch:
    """The search's trainer-side half: the held-out split, the logits' optimizer, expansion, logs and the export."""

    def __init__(self, model: nn.Module, bundle, *, model_config, heldout_fraction: float = 0.5,
                 ratios=(0.25, 0.5, 0.75, 1.0), expand_step: float = 0.25, max_ratio: float = 2.0,
                 threshold: float = 0.5, check_every: int = 50, warmup_epochs: float = 0.0, lr: float = 3e-3,
                 betas=(0.5, 0.999), weight_decay: float = 1e-3, flops_weight: float = 2.0, params_weight: float = 2.0,
                 budget: float = 1.0, budget_mode: str = "two_sided", tolerance: float = 0.05,
                 alignment: str = "cwi", init_std: float = 0.01, tau_max: float = 10.0, tau_min: float = 0.1,
                 epochs: int = 1, space: str = "all", export_name: str | None = None, seed: int = 0) -> None:
        ratios = tuple(ratios)
        if not ratios or any(isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0 for r in ratios):
            raise ValueError(f"search.ratios={list(ratios)} is invalid: use positive width ratios, e.g. [0.25, 0.5, 1.0]")
        if not 0 < threshold < 1:
            raise ValueError(f"search.threshold={threshold} is invalid: use a probability in (0, 1)")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
            raise ValueError(f"search.budget={budget} is invalid: use a positive fraction of the original network's cost")
        if max_ratio < max(ratios) or expand_step <= 0:
            raise ValueError(f"search.max_ratio={max_ratio}, expand_step={expand_step} are invalid: need max_ratio >= "
                             f"max(ratios)={max(ratios)} and expand_step > 0")
        if budget_mode not in ("two_sided", "at_most", "match"):
            raise ValueError(f"search.budget_mode={budget_mode} is invalid: use two_sided (TAS: steer the argmax network "
                             f"into [budget x (1 - tolerance), budget]), at_most (pay only above the budget) or match "
                             f"(pay for any distance from it)")
        if not 0 <= tolerance < 1 or not 0 < tau_min <= tau_max:
            raise ValueError(f"search.tolerance={tolerance}, tau_min={tau_min}, tau_max={tau_max} are invalid: need "
                             f"0 <= tolerance < 1 and 0 < tau_min <= tau_max")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"search.check_every={check_every} is invalid: use an integer >= 1")
        if warmup_epochs < 0:
            raise ValueError(f"search.warmup_epochs={warmup_epochs} is invalid: use a number of epochs >= 0")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            raise ValueError("search=nce runs in one process: launch it without torchrun / several tasks")
        self.export = export_path(export_name)
        hold_out = getattr(bundle.train, "hold_out", None)
        if hold_out is None:
            raise ValueError(f"search=nce needs a training set held in memory to split off its held-out part "
                             f"(data=fashion_mnist, cifar10, cifar100, synthetic); data={bundle.name} is not")
        self.model_config = OmegaConf.to_container(model_config, resolve=True) \
            if isinstance(model_config, DictConfig) else dict(model_config)
        self.model_config.pop("init_from", None)  # the run's start, not the found network's (its widths differ)
        self.model_kwargs = dict(bundle.model_kwargs)
        self.example = next(iter(bundle.test))[0][:1].cpu()  # one test image: the cost model's input shape
        self.original = count_cost(model, self.example)
        self.original_widths = current_widths(model, space)
        self.groups = width_groups(model, space)
        self.budget = {key: budget * value for key, value in self.original.items()}
        self.heldout = hold_out(heldout_fraction, seed)
        self.choices = to_supernet(model, ratios=ratios, expand_step=expand_step, max_ratio=max_ratio,
                                   alignment=alignment, init_std=init_std, seed=seed, space=space)
        self.cost = ExpectedCost(model, self.example, self.choices, self.groups)
        self.model = model
        self.optimizer = torch.optim.Adam(architecture_parameters(model), lr=lr, betas=tuple(betas),
                                          weight_decay=weight_decay)
        self.threshold, self.check_every = threshold, check_every
        self.flops_weight, self.params_weight = flops_weight, params_weight
        self.budget_mode, self.tolerance = budget_mode, tolerance
        self.start_step = math.ceil(warmup_epochs * len(bundle.train))
        self.steps_per_epoch, self.epochs, self.tau_range = len(bundle.train), max(int(epochs), 1), (tau_max, tau_min)
        self.temperature(0)
        self.heldout_epoch, self.heldout_batch, self._batches = 0, 0, None
        self.expansions = 0

    # -- the bilevel step ------------------------------------------------------------------------------------------
    def _next_heldout(self):
        if self._batches is None:
            self.heldout.set_epoch(self.heldout_epoch, start_batch=self.heldout_batch)
            self._batches = iter(self.heldout)
        try:
            batch = next(self._batches)
        except StopIteration:
            self.heldout_epoch, self.heldout_batch = self.heldout_epoch + 1, 0
            self.heldout.set_epoch(self.heldout_epoch)
            self._batches = iter(self.heldout)
            batch = next(self._batches)
        self.heldout_batch += 1
        return batch

    def _distance(self, expected: Tensor, argmax_cost: Tensor, budget: float) -> Tensor:
        ratio = expected / budget
        if self.budget_mode == "at_most":
            return F.relu(ratio - 1)
        if self.budget_mode == "match":
            return (ratio - 1).abs()
        # TAS (get_flop_loss): -log E[cost] while the argmax network is under budget - tolerance, +log E[cost] while
        # it is over the budget, nothing in between; a tensor sign, so no host sync
        over, under = argmax_cost > budget, argmax_cost < budget * (1 - self.tolerance)
        return torch.log(ratio) * (over.float() - under.float())

    def cost_loss(self) -> tuple[Tensor, Tensor, Tensor]:
        """(penalty, E[MACs] / budget, E[params] / budget), the penalty by `budget_mode`."""
        macs, params = self.cost()
        argmax_macs, argmax_params = self.cost.at({n: c.argmax_width_tensor() for n, c in self.choices.items()})
        penalty = self.flops_weight * self._distance(macs, argmax_macs, self.budget["macs"]) + \
            self.params_weight * self._distance(params, argmax_params, self.budget["params"])
        return penalty, macs / self.budget["macs"], params / self.budget["params"]

    def temperature(self, step: int) -> float:
        """TAS's schedule: tau from tau_max at the first epoch linearly to tau_min at the last."""
        tau_max, tau_min = self.tau_range
        epoch = min(step // max(self.steps_per_epoch, 1), self.epochs - 1)
        tau = tau_max - (tau_max - tau_min) * epoch / max(self.epochs - 1, 1)
        set_temperature(self.choices.values(), tau)
        return tau

    def step(self, step_model: nn.Module, task, step: int) -> None:
        """One architecture step on a held-out batch (after the warm-up), then the expansion check when due."""
        if step % max(self.steps_per_epoch, 1) == 0:
            self.temperature(step)  # the epoch's tau for the steps that follow
        if step <= self.start_step:
            return
        logits = self.optimizer.param_groups[0]["params"]
        batch = task.to_device(self._next_heldout(), logits[0].device)
        refresh(self.choices.values())  # a new pair of candidates per layer group for the held-out forward ...
        self.optimizer.zero_grad(set_to_none=True)  # also drops what the weight step's backward left in the logits
        penalty, _, _ = self.cost_loss()
        loss = task.loss(step_model, batch) + penalty
        loss.backward()
        self.optimizer.step()
        self.model.zero_grad(set_to_none=True)  # the weights' gradients from the held-out batch are not used
        refresh(self.choices.values())  # ... and another for the next weight step
        if step % self.check_every == 0:
            self.expand()

    @torch.no_grad()
    def expand(self) -> list[str]:
        """Add the next ladder width to every layer whose widest active candidate has probability > threshold."""
        grown = []
        for name, choice in self.choices.items():
            active = int(choice.active)
            if active < choice.logits.numel() and float(choice.probs()[active - 1]) > self.threshold:
                choice.logits[active] = choice.logits[active - 1]
                choice.active.fill_(active + 1)
                grown.append(name)
        if grown:
            self.expansions += len(grown)
            log.info("NCE expansion: " + ", ".join(f"{name} -> {self.choices[name].widths[int(self.choices[name].active) - 1]:.0f}"
                                                   for name in grown))
        return grown

    # -- what the trainer logs, saves and reports -----------------------------------------------------------------
    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """Per-layer width distributions and expected / argmax width, expected cost vs budget (a logging step)."""
        _, macs_ratio, params_ratio = self.cost_loss()
        found = self.found()
        out = {"nce/expected_macs_vs_budget": float(macs_ratio), "nce/expected_params_vs_budget": float(params_ratio),
               "nce/found_macs_vs_budget": found["macs"] / self.budget["macs"],
               "nce/found_params_vs_budget": found["params"] / self.budget["params"],
               "nce/expansions": float(self.expansions)}
        for name, choice in self.choices.items():
            out[f"nce/expected_width/{name}"] = float(choice.expected_width())
            out[f"nce/argmax_width/{name}"] = float(choice.argmax_width())
            for width, p in zip(choice.widths.tolist()[:int(choice.active)], choice.probs().tolist()):
                out[f"nce/p/{name}/{int(width)}"] = p
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "heldout_epoch": self.heldout_epoch,
                "heldout_batch": self.heldout_batch, "expansions": self.expansions}

    def load_state_dict(self, state: dict) -> None:
        if not state:  # a checkpoint written before the logits' first step
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.heldout_epoch, self.heldout_batch = state["heldout_epoch"], state["heldout_batch"]
        self.expansions, self._batches = state["expansions"], None

    def argmax_widths(self) -> list[int]:
        return [choice.argmax_width() for choice in self.choices.values()]

    def found_config(self, widths: list[int]) -> dict:
        """The model config with each group's width in its list (`widths`, `stage_widths`), in group order."""
        lists: dict[str, list[int]] = {}
        for group, width in zip(self.groups, widths):
            lists.setdefault(group.config_key, []).append(width)
        return {**self.model_config, **lists}

    def build_found(self, widths: list[int]) -> nn.Module:
        """The found network as `model=<export_name>` builds it."""
        return instantiate(self.found_config(widths), **self.model_kwargs)

    @torch.no_grad()
    def found(self) -> dict:
        """The argmax widths, each narrowed to its next smaller active candidate while the network's MACs or params are
        over budget (the layer whose next smaller candidate has the highest probability first), and their cost."""
        widths = self.argmax_widths()
        ladders = [[int(w) for w in c.widths.tolist()[:int(c.active)]] for c in self.choices.values()]
        probs = [c.probs().tolist() for c in self.choices.values()]
        narrowed = 0
        while True:
            macs, params = self.cost.at(dict(zip(self.choices, widths)))
            if macs <= self.budget["macs"] and params <= self.budget["params"]:
                break
            options = [(probs[i][ladders[i].index(w) - 1], i) for i, w in enumerate(widths) if ladders[i].index(w) > 0]
            if not options:
                break  # every layer at its narrowest candidate: report the cost as it is
            _, i = max(options)
            widths[i] = ladders[i][ladders[i].index(widths[i]) - 1]
            narrowed += 1
        return {"widths": widths, "narrowed_to_budget": narrowed, "macs": int(round(macs)), "params": int(round(params))}

    def finish(self) -> FoundNetwork:
        """The found network (its config and the summary's `nce` entry), checked against the built network's count;
        the trainer writes it (runtime.run_folder.write_found)."""
        found = self.found()
        built = count_cost(self.build_found(found["widths"]), self.example)  # the config as model=... builds it
        if built != {"macs": found["macs"], "params": found["params"]}:
            raise RuntimeError(f"NCE cost model {found} disagrees with the built network's count {built}")
        names = list(self.choices)
        report = {"layers": names, "widths": found["widths"], "original_widths": self.original_widths,
                  "macs": found["macs"], "params": found["params"],
                  "original_macs": self.original["macs"], "original_params": self.original["params"],
                  "budget_macs": self.budget["macs"], "budget_params": self.budget["params"],
                  "narrowed_to_budget": found["narrowed_to_budget"], "expansions": self.expansions}
        if self.export:
            report["config"] = f"model={self.export.stem}"
            log.info(f"NCE: found widths {found['widths']} ({found['macs'] / self.original['macs']:.3f}x the original "
                     f"MACs) -> {self.export}; retrain with `python train.py model={self.export.stem}`")
        header = [f"{type(self.model).__name__}, one width per searched group ({', '.join(names)}).",
                  f"MACs {found['macs']:,} (original {self.original['macs']:,}, budget {int(self.budget['macs']):,}); "
                  f"params {found['params']:,} (original {self.original['params']:,}).",
                  "Retrain: python train.py model=<this file's name>"]
        return FoundNetwork({"nce": report}, self.found_config(found["widths"]), header, self.export)
