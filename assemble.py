"""Config -> a `Run`: every object a training step needs, built one way for the trainer and every benchmark.

Two stages, so that a bad value never costs a data load:
1. `read_specs(cfg)`: the config's values checked into frozen specs (`Specs`); every bad value is a one-line
   `ConfigError` here, before any data or model is touched.
2. `assemble(cfg, specs, dist)`: task, data, model (quantized), search, optimizers, schedulers, the step model
   (DDP-wrapped, compiled) and the eval model, in the order that fixes the initial weights for a seed.
`Run.train_step(batch)` is the step a run takes and a benchmark times. The config is read here and in train.py only.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from models.init_from import load_init
from optim.step import step_optimizers
from optim.trs import TransitionCounter, freeze_weight_scales
from quant import QuantSpec, quant_parameters, quantize_
from quant.kernel_rule import int8_refusal
from quant.lifecycle import QuantLifecycle
from runtime import allocator, distributed, run_info
from runtime.compile import compile_model
from runtime.extras import MissingExtra
from runtime.dashboards import TensorBoardSpec
from runtime.run_logger import LoggerSpec, WandbSpec
from runtime.run_spec import RunSpec, choose_compile
from search.nce import NullSearch
from search.supernet import architecture_parameters

log = logging.getLogger("train")


class ConfigError(ValueError):
    """A bad value in the config or data setup, reported in one line before any training starts."""


@dataclass(frozen=True)
class Specs:
    run: RunSpec
    quant: QuantSpec
    labels: dict[str, Any]  # task, model, data, quantizer, bits, optim, seed: the table's and W&B's labels
    logger: LoggerSpec


def build(node: DictConfig, **kwargs):
    """instantiate(node), with a builder's own one-line FileNotFoundError / ValueError unwrapped from Hydra's, and
    a missing optional package (runtime.extras) found under Hydra's "Error locating target"."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (FileNotFoundError, ValueError, TypeError)):
            raise ConfigError(str(cause)) from cause
        while cause is not None:
            if isinstance(cause, MissingExtra):
                raise ConfigError(str(cause)) from cause
            cause = cause.__cause__
        raise


def build_quant_spec(cfg: DictConfig) -> QuantSpec:
    """`bits=4` sets W, A and G at once; otherwise `quant.bits.{w,a,g}` apply (32 or null = full precision)."""
    if cfg.bits is not None:
        try:
            QuantSpec(w_bits=cfg.bits)
        except ValueError as e:  # name the key the user typed, not the one it expands to
            raise ValueError(str(e).replace("quant.bits.w=", "bits=", 1)) from None
        w = a = g = cfg.bits
    else:
        w, a, g = cfg.quant.bits.w, cfg.quant.bits.a, cfg.quant.bits.g
    keep_fp = cfg.quant.keep_fp  # a bare string would iterate as characters: QuantSpec rejects it
    precision = OmegaConf.select(cfg, "quant.precision")  # quant=apt: adaptive bit-widths (docs/methods.md §4)
    newer = {key: OmegaConf.select(cfg, f"quant.{key}", default=default) for key, default in  # absent in older runs
             (("kernel", "fake"), ("weight_grid", "symmetric"), ("grad_format", "int"), ("grad_rounding", "nearest"),
              ("fused", True))}
    return QuantSpec(w_bits=w, a_bits=a, g_bits=g, grad=build(cfg.quant.grad),
                     keep_first_last=cfg.quant.keep_first_last,
                     keep_fp=tuple(keep_fp) if isinstance(keep_fp, ListConfig) else keep_fp,
                     precision=build(precision) if precision is not None else None, **newer)


def check_learning_rates(cfg: DictConfig) -> None:
    """torch's own check (`Invalid learning rate: -0.1`) comes after the data loads and names no key."""
    for key in ("optim.optimizer.lr", "quant.interval_lr"):
        lr = OmegaConf.select(cfg, key)
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            raise ValueError(f"{key}={lr} is invalid: use a learning rate > 0")


def read_specs(cfg: DictConfig, choices: dict[str, str] | None = None) -> Specs:
    """Every value checked, before data is touched; the stored config then says what ran (`bits=8` and
    `quant=fp32` rewrite quant.bits, 32 = full precision)."""
    if OmegaConf.select(cfg, "model.init_from") == "required":  # an experiment that starts from a trained network
        raise ConfigError("model.init_from is required here (QAT starts from a trained full-precision network): give "
                          "a run folder or checkpoint file, or model.init_from=null to train from scratch")
    try:
        run = RunSpec(epochs=cfg.optim.epochs, log_every=cfg.log_every, max_nonfinite_steps=cfg.max_nonfinite_steps,
                      checkpoint_every_min=cfg.checkpoint_every_min, device=str(cfg.device), amp=cfg.amp,
                      compile=cfg.compile, deterministic=cfg.deterministic, channels_last=cfg.channels_last,
                      progress=cfg.progress,
                      eval_at_start=OmegaConf.select(cfg, "model.init_from") is not None)
        check_learning_rates(cfg)
        qspec = build_quant_spec(cfg)
        with open_dict(cfg):
            cfg.quant.bits = {role: getattr(qspec, f"{role}_bits") or 32 for role in ("w", "a", "g")}
        bits = run_info.bits_label(qspec.w_bits, qspec.a_bits, qspec.g_bits, adaptive=qspec.precision)
        labels = {**run_info.run_labels(cfg, choices or {}, bits=bits), "seed": cfg.seed}
        logger = build_logger_spec(cfg, labels)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return Specs(run=run, quant=qspec, labels=labels, logger=logger)


def build_logger_spec(cfg: DictConfig, labels: dict[str, Any]) -> LoggerSpec:
    """The dashboards `logger=` selected (configs/logger: each present node is one); W&B's job type and tags name
    the quantizer and bits, so runs group and filter by them."""
    wandb, tensorboard = OmegaConf.select(cfg, "logger.wandb"), OmegaConf.select(cfg, "logger.tensorboard")
    bits = labels["bits"]
    return LoggerSpec(
        wandb=None if wandb is None else WandbSpec(
            mode=wandb.mode, project=wandb.project, entity=wandb.entity, group=wandb.group,
            job_type=f"{labels['quantizer']}-{bits}",
            tags=(labels["model"], labels["data"], labels["quantizer"], bits, *wandb.tags)),
        tensorboard=None if tensorboard is None else TensorBoardSpec(flush_secs=tensorboard.flush_secs),
        csv=OmegaConf.select(cfg, "logger.csv") is not None)


def build_optimizers(cfg: DictConfig, model: torch.nn.Module, *, steps_per_epoch: int, epochs: int):
    """(optimizers, schedulers, params): the weights' optimizer, the intervals' Adam, their LR schedules.
    The frozen s_W of a TRS run are in neither optimizer.

    The paper trains the quantizer intervals (s_W, u_A) with their own Adam without weight decay; the official code
    decays its lr with the weights' schedule (docs/methods.md), `quant.interval_lr_schedule=false` keeps it fixed.
    """
    if cfg.optim.get("trs"):  # TRS trains u_A but not s_W (its paper's footnote 2; docs/methods.md §3)
        freeze_weight_scales(model)
    intervals = [p for p in quant_parameters(model) if p.requires_grad]
    not_weights = {id(p) for p in [*intervals, *architecture_parameters(model)]}  # NCE's logits: search/nce.py
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in not_weights]
    optimizers = [build(cfg.optim.optimizer)(weights)]
    if intervals:
        optimizers.append(torch.optim.Adam(intervals, lr=cfg.quant.interval_lr, fused=True))
    scheduled = optimizers if cfg.quant.interval_lr_schedule else optimizers[:1]
    schedulers = [build(cfg.optim.scheduler)(opt, steps_per_epoch=steps_per_epoch, epochs=epochs) for opt in scheduled]
    if cfg.optim.get("trs"):  # TRS drives the weights' lr instead of their LR schedule (docs/methods.md §3)
        schedulers[0] = build(cfg.optim.trs)(optimizers[0], model, steps_per_epoch=steps_per_epoch, epochs=epochs)
    elif cfg.get("log_transitions"):  # a plain optimizer's transition rate, as TRS logs it (docs/methods.md §3.5)
        schedulers.append(TransitionCounter(model))
    return optimizers, schedulers, weights + intervals


@dataclass(kw_only=True)
class Run:
    """Everything one training run steps, evaluates and checkpoints."""
    specs: Specs
    dist: distributed.Dist
    task: Any
    bundle: Any  # data.bundle.DataBundle: train / test loaders, sharding
    model: torch.nn.Module  # the bare model: its state_dict is the checkpoint's
    step_model: torch.nn.Module  # what the training step runs: DDP-wrapped and/or compiled
    search: Any  # search.nce.WidthSearch, or NullSearch
    quant: QuantLifecycle
    optimizers: list[torch.optim.Optimizer]
    schedulers: list
    params: list[torch.Tensor]
    autocast: Any = field(default_factory=nullcontext)
    compiled: bool = False  # the step runs torch.compile'd (compile=true, or what compile=auto chose)
    notes: list[str] = field(default_factory=list)  # what the assembly chose and why, for the run's log

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def train_step(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: forward, backward, cross-rank quantizer reduction, optimizer steps; (loss, non-finite flag).

        No host sync (the rank-sum of the pending gradient-interval statistics is one packed collective). A step
        that records statistics (quant.set_recording) runs a compiled model eagerly: compiled, it would be a second
        graph of the whole step, doubling the compile time for one step in `log_every`."""
        with self._eager(self.quant.recording):
            with self.autocast:
                loss = self.task.loss(self.step_model, batch)
            loss.backward()
        self.quant.after_backward()
        nonfinite = step_optimizers(self.optimizers, self.params)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        for scheduler in self.schedulers:
            scheduler.step()
        return loss.detach(), nonfinite

    def evaluate(self) -> dict[str, float]:
        """The task's metrics on this rank's test shard (the task sums over ranks), from the bare model (its forward
        runs no collective: test shards differ in length across ranks), eagerly: a compiled model's evaluation was
        its own graphs, a third of a detector's compile time for a few percent of a run's forwards (docs/speed.md)."""
        self.model.eval()
        with torch.no_grad(), self.autocast, self._eager():
            return self.task.evaluate(self.model, self.bundle.test, self.device)

    def _eager(self, when: bool = True):
        """A context that runs the compiled model's code eagerly if `when` (a no-op for an eager run)."""
        return torch.compiler.set_stance("force_eager") if self.compiled and when else nullcontext()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers], "search": self.search.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.search.load_state_dict(state.get("search", {}))
        for obj, saved in zip([*self.optimizers, *self.schedulers], [*state["optimizers"], *state["schedulers"]]):
            obj.load_state_dict(saved)


def assemble(cfg: DictConfig, specs: Specs, dist: distributed.Dist, *, bundle=None) -> Run:
    """Build the run's objects; bad data or a bad layer pattern is a one-line ConfigError. Adds the quantized
    layers' count and kernels to `specs.labels`. `bundle`: a DataBundle made by the caller instead of `cfg.data`'s
    (a benchmark's generated batches)."""
    run_spec, device = specs.run, dist.device
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    allocator.keep_freed_memory()  # a CPU step reuses the last step's pages (runtime/allocator.py)
    if run_spec.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    task = build(cfg.task)
    bundle = build(cfg.data) if bundle is None else bundle
    specs.labels["data_source"] = bundle.source  # the folder actually read: logged, and kept in summary.json
    model = build_model(cfg.model, bundle.model_kwargs)
    # search=nce: the model becomes a width supernet and part of the training split is held out for its logits
    search = build(cfg.search, model=model, bundle=bundle) if cfg.get("search") else NullSearch()
    bundle.shard(dist.rank, dist.world)
    quant = quantize(model, specs, all_reduce=dist.all_reduce_sum if dist.enabled else None)
    quant.prepare(steps_per_epoch=len(bundle.train), epochs=run_spec.epochs)
    model.to(device)
    if run_spec.channels_last:  # ~1.4x faster convolutions on CPU (oneDNN) and on tensor cores
        model.to(memory_format=torch.channels_last)
    try:  # the factories' own checks (e.g. TRS without quantized weights) are bad config, not crashes
        optimizers, schedulers, params = build_optimizers(cfg, model, steps_per_epoch=len(bundle.train),
                                                          epochs=run_spec.epochs)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    step_model = distributed.wrap(model, dist)
    compiled, why = choose_compile(run_spec.compile, device, specs.labels["task"])
    specs.labels["compiled"] = compiled  # what compile=auto chose, in summary.json and W&B
    notes = [why, *([int8_refusal()] if specs.quant.kernel == "int8" and int8_refusal() else [])]
    step_model = compile_model(step_model) if compiled else step_model
    if run_spec.amp and device.type != "cuda":
        log.warning(f"amp=true has no effect on {device.type}: bf16 autocast runs on CUDA only")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if run_spec.amp and device.type == "cuda" \
        else nullcontext()
    return Run(specs=specs, dist=dist, task=task, bundle=bundle, model=model, step_model=step_model,
               search=search, quant=quant, optimizers=optimizers, schedulers=schedulers,
               params=params, autocast=autocast, compiled=compiled, notes=notes)


def build_model(node: DictConfig, model_kwargs: dict) -> torch.nn.Module:
    """The model config's network, with the trained weights of `model.init_from` when given (models/init_from.py);
    `init_from` is the run's key, not the builder's argument."""
    config = OmegaConf.to_container(node, resolve=True)  # resolved in the run's config: interpolations keep working
    init_from = config.pop("init_from", None)
    model = build(OmegaConf.create(config), **model_kwargs)
    if init_from is not None:
        try:
            load_init(model, init_from)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(str(e)) from e
    return model


def quantize(model: torch.nn.Module, specs: Specs, *, all_reduce=None) -> QuantLifecycle:
    """quantize_ the model per the spec (nothing in full precision) and return its lifecycle object."""
    if not specs.quant.is_full_precision:
        try:
            quantize_(model, specs.quant)
        except ValueError as e:  # e.g. a keep_fp pattern that names no layer of this model
            raise ConfigError(str(e)) from e
    quant = QuantLifecycle(model, all_reduce=all_reduce)
    if specs.quant.w_bits is not None:
        specs.labels["weight_grid"] = specs.quant.weight_grid
    if not specs.quant.is_full_precision and not quant.quantized:
        raise ConfigError(f"no layer was quantized although bits={specs.labels['bits']}: quant.keep_fp="
                          f"{list(specs.quant.keep_fp)} / quant.keep_first_last keep every conv and linear layer")
    specs.labels.update(quant.labels())
    return quant
