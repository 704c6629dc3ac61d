"""The one trainer: any architecture x bit-width (W/A/G) x gradient quantizer x task, from one Hydra config.

Reads top to bottom: config -> validated specs -> objects -> resume -> loop -> summary. The config is read only
here; everything below receives plain objects. The same file runs one process, every rank of a
`torchrun --nproc_per_node=N` job, and every job of a joblib / submitit / SLURM sweep.

    python train.py                                             # ResNet-20, Fashion-MNIST, W4A4G4, LBT
    python train.py bits=8 quant/grad=mse optim.epochs=1        # any axis from the command line
    python train.py -m bits=4,8 quant/grad=minmax,mse,lbt seed=0,1   # a sweep (Hydra multirun)
    torchrun --nproc_per_node=4 train.py experiment=lbt_imagenet_resnet18   # data-parallel on 4 GPUs
"""
import logging
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from tqdm import tqdm

from optim.trs import drain_transition_stats
from quant import (QConv2d, QLinear, QuantSpec, apply_deferred_updates, drain_grad_stats, kernel_choices,
                   quant_parameters, quantize_, set_deferred_updates, set_precision_schedule, set_recording,
                   precision_stepper, sync_quant_state, warmup_grad_intervals)
from runtime import atomic, checkpoint, cli, distributed, resume_guard, run_info
from runtime.compile import compile_model, eager_fallbacks
from runtime.extras import MissingExtra
from runtime.preemption import PreemptionGuard
from runtime.results import read_summary
from runtime.run_lock import RunInUseError, run_lock
from runtime.run_logger import NullLogger, RunLogger, WandbSpec
from runtime.sweep_summary import mark_refused
from search.nce import NullSearch, architecture_parameters

log = logging.getLogger("train")
OmegaConf.register_new_resolver(
    "run_id", lambda overrides: cli.run_id(overrides, world=distributed.launched_world_size()), replace=True)


class ConfigError(ValueError):
    """A bad value in the config or data setup, reported in one line before any training starts."""


class RunFolderRefused(RuntimeError):
    """The run folder belongs to another process or to another config: refuse in one line, write nothing there."""


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    epochs: int
    log_every: int
    max_nonfinite_steps: int
    checkpoint_every_min: float | None
    device: str
    amp: bool
    compile: bool
    deterministic: bool
    channels_last: bool
    progress: bool

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"optim.epochs={self.epochs} is invalid: use an integer >= 1")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise ValueError(f"log_every={self.log_every} is invalid: use an integer >= 1")
        if not isinstance(self.max_nonfinite_steps, int) or self.max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps={self.max_nonfinite_steps} is invalid: use an integer >= 1")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device={self.device} is invalid: use auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device} but no CUDA GPU is visible: use device=cpu or device=auto")
        if self.amp and self.device == "cpu":
            raise ValueError("amp=true is invalid with device=cpu: bf16 autocast runs on CUDA only; use amp=false")
        minutes = self.checkpoint_every_min
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0):
            raise ValueError(f"checkpoint_every_min={minutes} is invalid: use minutes > 0, or null for epoch ends only")


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
    return QuantSpec(w_bits=w, a_bits=a, g_bits=g, grad=build(cfg.quant.grad),
                     keep_first_last=cfg.quant.keep_first_last,
                     keep_fp=tuple(keep_fp) if isinstance(keep_fp, ListConfig) else keep_fp,
                     precision=build(precision) if precision is not None else None,
                     kernel=OmegaConf.select(cfg, "quant.kernel", default="fake"))


def check_learning_rates(cfg: DictConfig) -> None:
    """torch's own check (`Invalid learning rate: -0.1`) comes after the data loads and names no key."""
    for key in ("optim.optimizer.lr", "quant.interval_lr"):
        lr = OmegaConf.select(cfg, key)
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            raise ValueError(f"{key}={lr} is invalid: use a learning rate > 0")


def store_effective_bits(cfg: DictConfig, qspec: QuantSpec) -> None:
    """The stored config says what ran: `bits=8` or `quant=fp32` rewrite quant.bits (32 = full precision)."""
    with open_dict(cfg):
        cfg.quant.bits = {role: getattr(qspec, f"{role}_bits") or 32 for role in ("w", "a", "g")}


def step_optimizers(optimizers: list[torch.optim.Optimizer], params: list[torch.Tensor]) -> torch.Tensor:
    """Take an optimizer step unless some gradient is non-finite; returns that flag as a 0-dim float tensor.

    Fused optimizers read `found_inf` on device and skip the whole update (momentum included), so skipping costs
    no host sync. A non-fused optimizer needs the flag on the host: one sync per step, the price of its choice.
    """
    norms = torch._foreach_norm([p.grad for p in params if p.grad is not None])
    nonfinite = (~torch.isfinite(torch.stack(norms).sum())).float()
    for opt in optimizers:
        if opt.defaults.get("fused"):
            opt.found_inf = nonfinite
            opt.step()
        elif not bool(nonfinite):
            opt.step()
    return nonfinite


def build_optimizers(cfg: DictConfig, model: torch.nn.Module, *, steps_per_epoch: int, epochs: int):
    """(optimizers, schedulers, params): the weights' optimizer, the intervals' Adam, their LR schedules.

    The paper trains the quantizer intervals (s_W, u_A) with their own Adam without weight decay; the official code
    decays its lr with the weights' schedule (docs/methods.md), `quant.interval_lr_schedule=false` keeps it fixed.
    """
    intervals = quant_parameters(model)
    not_weights = {id(p) for p in [*intervals, *architecture_parameters(model)]}  # NCE's logits: search/nce.py
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in not_weights]
    optimizers = [build(cfg.optim.optimizer)(weights)]
    if intervals:
        optimizers.append(torch.optim.Adam(intervals, lr=cfg.quant.interval_lr, fused=True))
    scheduled = optimizers if cfg.quant.interval_lr_schedule else optimizers[:1]
    schedulers = [build(cfg.optim.scheduler)(opt, steps_per_epoch=steps_per_epoch, epochs=epochs) for opt in scheduled]
    if cfg.optim.get("trs"):  # TRS drives the weights' lr instead of their LR schedule (docs/methods.md §3)
        schedulers[0] = build(cfg.optim.trs)(optimizers[0], model, steps_per_epoch=steps_per_epoch, epochs=epochs)
    return optimizers, schedulers, weights + intervals


def train_step(step_model, model, task, batch, optimizers, schedulers, params, *, all_reduce=None,
               autocast=nullcontext()) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: forward, backward, cross-rank quantizer reduction, optimizer steps; (loss, non-finite flag).

    `all_reduce` (several ranks) sums the layers' pending gradient-interval statistics in one packed call, so
    gamma is updated identically everywhere. No host sync.
    """
    with autocast:
        loss = task.loss(step_model, batch)
    loss.backward()
    if all_reduce is not None:
        apply_deferred_updates(model, all_reduce)
    nonfinite = step_optimizers(optimizers, params)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    for scheduler in schedulers:
        scheduler.step()
    return loss.detach(), nonfinite


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


def train(cfg: DictConfig, choices: dict[str, str] | None = None, overrides: list[str] | None = None) -> dict:
    """Train one run. `choices`: Hydra's group choices (labels for tables and W&B); `overrides`: the command line's,
    kept in summary.json (the run folder's name may be shortened)."""
    # -- config -> validated specs: every bad value fails here, before data is touched -----------------------------
    try:
        run = RunSpec(epochs=cfg.optim.epochs, log_every=cfg.log_every, max_nonfinite_steps=cfg.max_nonfinite_steps,
                      checkpoint_every_min=cfg.checkpoint_every_min, device=str(cfg.device), amp=cfg.amp,
                      compile=cfg.compile, deterministic=cfg.deterministic, channels_last=cfg.channels_last,
                      progress=cfg.progress)
        check_learning_rates(cfg)
        qspec = build_quant_spec(cfg)
        quantized = not qspec.is_full_precision
        store_effective_bits(cfg, qspec)
        bits = run_info.bits_label(qspec.w_bits, qspec.a_bits, qspec.g_bits, adaptive=qspec.precision)
        labels = {**run_info.run_labels(cfg, choices or {}, bits=bits), "seed": cfg.seed}
        wandb_spec = WandbSpec(mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                               group=cfg.logger.group, job_type=f"{labels['quantizer']}-{bits}",
                               tags=(labels["model"], labels["data"], labels["quantizer"], bits, *cfg.logger.tags))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    run_dir = Path(cfg.run_dir)
    refusal = resume_guard.check_resume_config(run_dir, run_info.resolved(cfg))
    if refusal:  # never resume (or skip as done) a run folder that holds another config's state
        raise RunFolderRefused(refusal)
    previous = read_summary(run_dir)
    world = distributed.launched_world_size()
    if previous and previous.get("world_size", 1) != world:  # another global batch: never skip or resume as it
        raise RunFolderRefused(f"{run_dir} holds a run of {previous.get('world_size', 1)} process(es), this one has "
                               f"{world}: choose another name=... for it")
    if previous and previous.get("status") == "finished":
        log.info(f"{run_dir} already finished; skipping (delete its summary.json to run it again)")
        return previous

    dist = distributed.setup(run.device)
    with ExitStack() as cleanup:
        cleanup.callback(distributed.teardown, dist)
        return _train(cfg, run, qspec, quantized, labels, wandb_spec, dist, run_dir, overrides or [], cleanup)


def _train(cfg, run, qspec, quantized, labels, wandb_spec, dist, run_dir, overrides, cleanup: ExitStack) -> dict:
    config = run_info.resolved(cfg)
    # -- objects ------------------------------------------------------------------------------------------------
    device = dist.device
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    task = build(cfg.task)
    bundle = build(cfg.data)
    model = build(cfg.model, **bundle.model_kwargs)
    # search=nce: the model becomes a width supernet and part of the training split is held out for its logits
    search = build(cfg.search, model=model, bundle=bundle) if cfg.get("search") else NullSearch()
    bundle.shard(dist.rank, dist.world)
    if quantized:
        try:
            quantize_(model, qspec)
        except ValueError as e:  # e.g. a keep_fp pattern that names no layer of this model
            raise ConfigError(str(e)) from e
        labels["quantized_layers"] = sum(isinstance(m, (QConv2d, QLinear)) for m in model.modules())
        if not labels["quantized_layers"]:
            raise ConfigError(f"no layer was quantized although bits={labels['bits']}: quant.keep_fp="
                              f"{list(qspec.keep_fp)} / quant.keep_first_last keep every conv and linear layer")
        labels["kernels"] = kernel_choices(model)  # {layer: "int8" | "int8-forward" | "exact" | "fake"}
        set_deferred_updates(model, dist.enabled)  # gamma updates wait for the cross-rank reduction
        set_precision_schedule(model, steps_per_epoch=len(bundle.train), epochs=run.epochs)  # APT only
    model.to(device)
    if run.channels_last:  # ~1.4x faster convolutions on CPU (oneDNN) and on tensor cores
        model.to(memory_format=torch.channels_last)
    try:  # the factories' own checks (e.g. TRS without quantized weights) are bad config, not crashes
        optimizers, schedulers, params = build_optimizers(cfg, model, steps_per_epoch=len(bundle.train),
                                                          epochs=run.epochs)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    step_model = distributed.wrap(model, dist)
    fallbacks_before = eager_fallbacks()  # the summary lists what this run's compiled code ran eagerly, and why
    step_model = compile_model(step_model) if run.compile else step_model
    # Test shards differ in length across ranks: evaluate the bare model, whose forward runs no collective.
    eval_model = (compile_model(model) if run.compile else model) if dist.enabled else step_model

    # -- resume -------------------------------------------------------------------------------------------------
    try:
        ckpt = checkpoint.load(run_dir)  # falls back to checkpoint.prev.pt when the newest is unreadable
    except checkpoint.CheckpointError as e:
        raise ConfigError(str(e)) from e
    start_epoch, start_batch, step, best, final = 0, 0, 0, {}, {}
    if ckpt and len(ckpt["rng"]) != dist.world:  # every rank's RNG and data shard depend on the world size
        raise ConfigError(f"{run_dir} was checkpointed by {len(ckpt['rng'])} process(es), this run has {dist.world}: "
                          f"resume with the same number of ranks, or choose another name=... to start over")
    if ckpt:
        model.load_state_dict(ckpt["model"])
        search.load_state_dict(ckpt.get("search", {}))
        for obj, state in zip([*optimizers, *schedulers], [*ckpt["optimizers"], *ckpt["schedulers"]]):
            obj.load_state_dict(state)
        start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        best, final = ckpt["best"], ckpt["final"]
        checkpoint.set_rng_state(ckpt["rng"][dist.rank])
    # -- from here on this process owns the run folder: everything above only read (a rejected run writes nothing)
    if dist.is_main:
        cleanup.enter_context(run_lock(run_dir))  # a second process on the same folder refuses in one line
        atomic.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic.write_json(run_dir / "summary.json", {"status": "running", "error": None, "name": cfg.name,
                                                     "run_id": run_dir.name, **labels})
        logger = RunLogger(run_dir, wandb_spec, run_name=f"{cfg.name}/{run_dir.name}", config=config,
                           wandb_id=ckpt.get("wandb_id") if ckpt else None, resume_step=step if ckpt else -1)
    else:
        logger = NullLogger()
    if ckpt:
        log.info(f"resuming {run_dir} at epoch {start_epoch + 1}, batch {start_batch} (step {step})")
    if run.amp and device.type != "cuda":
        log.warning(f"amp=true has no effect on {device.type}: bf16 autocast runs on CUDA only")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if run.amp and device.type == "cuda" else nullcontext()
    primary = f"test/{task.metric}"
    started = time.perf_counter()
    if dist.enabled and not ckpt:  # each rank draws its own rounding noise (a resumed run restores its RNG)
        torch.manual_seed(cfg.seed * 1000 + dist.rank + 1)
    reduce_grad_state = dist.all_reduce_sum if quantized and dist.enabled else None
    precision_step = precision_stepper(model)  # a no-op unless APT measures on a cadence
    guard = PreemptionGuard(every_min=run.checkpoint_every_min, dist=dist, sync_every=run.log_every if dist.enabled else 1)
    try:
        if quantized and not ckpt:  # first-batch init of the intervals and LBT's gamma warm-up; no optimizer step
            bundle.train.set_epoch(0)
            first = task.to_device(next(iter(bundle.train)), device)
            warmup_grad_intervals(model, lambda: task.loss(model, first))  # the bare model: no DDP hooks
            sync_quant_state(model, dist.all_reduce_sum if dist.enabled else None)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)

        # -- loop: no host sync except on logging steps --------------------------------------------------------
        acc = ckpt["accumulators"] if ckpt else {"loss_sum": 0.0, "window_steps": 0, "skipped": 0.0, "in_row": 0.0}
        loss_sum = torch.tensor(acc["loss_sum"], device=device)
        skipped = torch.tensor(acc["skipped"], device=device)  # steps skipped for non-finite gradients, in total
        skipped_run = torch.tensor(acc["in_row"], device=device)  # ... in a row
        window_steps = acc["window_steps"]

        def save(epoch: int, batch: int) -> None:
            """Everything that decides the rest of the run; every rank's RNG (their rounding noise differs)."""
            rngs = dist.gather(checkpoint.rng_state())
            accumulators = {"loss_sum": float(loss_sum), "window_steps": window_steps, "skipped": float(skipped),
                            "in_row": float(skipped_run)}
            if dist.is_main:
                checkpoint.save(run_dir, model=model.state_dict(), optimizers=[o.state_dict() for o in optimizers],
                                schedulers=[s.state_dict() for s in schedulers], epoch=epoch, batch=batch, step=step,
                                best=best, final=final, accumulators=accumulators, rng=rngs,
                                wandb_id=logger.wandb_id, search=search.state_dict())
            guard.saved()

        with guard:
            for epoch in range(start_epoch, run.epochs):
                first_batch = start_batch if epoch == start_epoch else 0
                bundle.train.set_epoch(epoch, start_batch=first_batch)
                model.train()
                window_start, window_samples = time.perf_counter(), 0
                bar = tqdm(bundle.train, desc=f"epoch {epoch + 1}/{run.epochs}", initial=first_batch,
                           disable=not (run.progress and dist.is_main), leave=False)
                for batch_index, batch in enumerate(bar, start=first_batch + 1):
                    logging_step = (step + 1) % run.log_every == 0 or step == 0
                    precision_step(step)  # APT with check_every > 1: does this step measure diff_bit (methods §4.2)
                    if logging_step and quantized:
                        set_recording(model, True)
                    batch = task.to_device(batch, device)
                    loss, nonfinite = train_step(step_model, model, task, batch, optimizers, schedulers, params,
                                                 all_reduce=reduce_grad_state, autocast=autocast)
                    loss_sum += loss.float()
                    skipped += nonfinite
                    skipped_run = (skipped_run + 1) * nonfinite
                    step, window_steps, window_samples = step + 1, window_steps + 1, window_samples + task.batch_size(batch)
                    search.step(step_model, task, step)  # NCE: the width logits' step on a held-out batch
                    if logging_step:
                        stats = {}
                        if quantized:
                            set_recording(model, False)
                            stats = drain_grad_stats(model)
                        stats.update(drain_transition_stats(schedulers))  # TRS: target, measured rate, U_t
                        stats.update(search.stats())  # NCE: width distributions, expected cost vs budget
                        mean_loss, n_skipped, n_in_row = torch.stack([loss_sum / window_steps, skipped,
                                                                      skipped_run]).tolist()
                        if n_in_row >= run.max_nonfinite_steps:
                            raise RuntimeError(f"{int(n_in_row)} steps in a row had non-finite gradients (step {step}): "
                                               f"lower optim.optimizer.lr or use more gradient bits")
                        elapsed = time.perf_counter() - window_start
                        logger.log({"train/loss": mean_loss, "train/lr": float(optimizers[0].param_groups[0]["lr"]),
                                    "train/img_per_s": window_samples * dist.world / elapsed,
                                    "train/skipped_steps": n_skipped, **stats}, step=step, epoch=epoch)
                        bar.set_postfix(loss=f"{mean_loss:.3f}")
                        loss_sum.zero_()
                        window_start, window_steps, window_samples = time.perf_counter(), 0, 0
                    if guard.due(step):  # every checkpoint_every_min minutes, or the cluster's warning signal
                        save(epoch, batch_index)
                        guard.stop_if_signalled()

                model.eval()
                with torch.no_grad(), autocast:  # every rank evaluates its shard; the task sums over ranks
                    final = {f"test/{k}": v for k, v in task.evaluate(eval_model, bundle.test, device).items()}
                if not best or final[primary] > best[primary]:
                    best = dict(final)
                logger.log(final, step=step, epoch=epoch)
                diverged = distributed.replica_mismatch(model, dist)
                if diverged:  # a silent divergence would make every later number wrong
                    raise RuntimeError(f"ranks hold different values of {len(diverged)} tensors after epoch "
                                       f"{epoch + 1}, e.g. {', '.join(diverged[:3])}")
                log.info(f"epoch {epoch + 1}/{run.epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in final.items()))
                save(epoch + 1, 0)
    except BaseException:
        logger.finish(exit_code=1)
        raise

    found = search.finish(run_dir) if dist.is_main else {}  # NCE: the found widths, written as a model config
    fallbacks = dict(eager_fallbacks() - fallbacks_before) if run.compile else None
    if fallbacks:  # a compiled run that is partly eager is slow for a reason the user should see
        log.warning(f"compile=true, but parts of this run's step ran eagerly: {fallbacks}")
    summary = {"status": "finished", "error": None, "name": cfg.name, "run_id": run_dir.name, **labels, **found,
               "metric": primary, "final": final, "best": best, "epochs": run.epochs, "steps": step,
               "world_size": dist.world, "overrides": overrides, "eager_fallbacks": fallbacks,
               "wall_time_s": round(time.perf_counter() - started, 2),
               "versions": run_info.versions(), "config": config}
    if dist.is_main:
        atomic.write_json(run_dir / "summary.json", summary)
        logger.summary(summary)
    logger.finish()
    log.info(f"{primary}: final {final[primary]:.4g}, best {best[primary]:.4g} -> {run_dir}")
    return summary


def remove_empty_run_dir(cfg: DictConfig) -> None:
    """Hydra makes the run folder before the job starts; a rejected command must not leave it (nor its empty
    results/<name>/ parent) behind. Only empty folders are removed, up to results_dir."""
    results, folder = Path(cfg.results_dir).resolve(), Path(cfg.run_dir).resolve()
    while folder != results and results in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (another run's files, train.log) or already gone
            return
        folder = folder.parent


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """A failed job leaves a summary saying why, so a sweep's table lists it instead of silently missing it."""
    run_dir = Path(cfg.run_dir)
    previous = read_summary(run_dir) or {}
    try:
        atomic.write_json(run_dir / "summary.json", {**previous, "status": "failed", "name": cfg.name,
                                                     "run_id": run_dir.name, "error": f"{type(error).__name__}: {error}"})
    except OSError as e:  # a full disk or a read-only folder: say so, and keep the original error
        log.error(f"could not record the failure in {run_dir}: {e}")


@hydra.main(version_base="1.3", config_path=str(cli.CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return train(cfg, dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task))
    except (RunFolderRefused, RunInUseError) as e:  # the folder is not ours to write a failure into
        if multirun:
            log.error(f"job refused: {e}")
            mark_refused(Path(cfg.run_dir))  # the sweep counts it as failed, not as the folder's earlier run
            return None
        print(f"error: {e}", file=sys.stderr)
        remove_empty_run_dir(cfg)
        sys.exit(2)
    except ConfigError as e:
        if multirun:  # one bad job must not stop the rest of the sweep
            record_failure(cfg, e)
            log.error(f"job failed: {e}")
            return None
        print(f"error: {e}", file=sys.stderr)  # a rejected command leaves no file and no folder, train.log included
        remove_empty_run_dir(cfg)
        sys.exit(2)
    except SystemExit:
        raise
    except OSError as e:
        if e.errno not in atomic.WRITE_ERRNOS:
            raise
        record_failure(cfg, e)  # a full disk or an unwritable folder: one line, no traceback
        log.error(f"job failed: {e}")
        if multirun:
            return None
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        record_failure(cfg, e)
        log.exception(f"job failed: {type(e).__name__}: {e}")
        if multirun:
            return None
        raise


def cli_main() -> None:
    error = cli.check_overrides(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    distributed.quiet_hydra_on_workers()
    main()


if __name__ == "__main__":
    # Run through the importable module, so launchers (joblib, submitit) pickle `train.main` by reference rather
    # than pickling this script's globals by value (which fails on torch's C modules).
    import train as _self

    _self.cli_main()
