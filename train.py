"""The one trainer: any architecture x bit-width (W/A/G) x gradient quantizer x task, from one Hydra config.

Reads top to bottom: config -> validated specs -> objects -> resume -> loop -> summary. The config is read only
here; everything below receives plain objects.

    python train.py                                             # ResNet-20, Fashion-MNIST, W4A4G4, LBT
    python train.py bits=8 quant/grad=mse optim.epochs=1        # any axis from the command line
    python train.py -m bits=4,8 quant/grad=minmax,mse,lbt seed=0,1   # a sweep (Hydra multirun)
"""
import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from quant import QuantSpec, drain_grad_stats, quant_parameters, quantize_, set_recording, warmup_grad_intervals
from runtime import atomic, checkpoint, cli, run_info
from runtime.run_logger import RunLogger, WandbSpec

log = logging.getLogger("train")
OmegaConf.register_new_resolver("run_id", cli.run_id, replace=True)


class ConfigError(ValueError):
    """A bad value in the config or data setup, reported in one line before any training starts."""


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    epochs: int
    log_every: int
    max_nonfinite_steps: int
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
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps={self.max_nonfinite_steps} is invalid: use an integer >= 1")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device={self.device} is invalid: use auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device} but no CUDA GPU is visible: use device=cpu or device=auto")


def build_quant_spec(cfg: DictConfig) -> QuantSpec:
    """`bits=4` sets W, A and G at once; otherwise `quant.bits.{w,a,g}` apply (32 or null = full precision)."""
    w, a, g = (cfg.bits,) * 3 if cfg.bits is not None else (cfg.quant.bits.w, cfg.quant.bits.a, cfg.quant.bits.g)
    return QuantSpec(w_bits=w, a_bits=a, g_bits=g, grad=instantiate(cfg.quant.grad),
                     keep_first_last=cfg.quant.keep_first_last, keep_fp=tuple(cfg.quant.keep_fp))


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


def read_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else None


def train(cfg: DictConfig) -> dict:
    # -- config -> validated specs: every bad value fails here, before data is touched -----------------------------
    try:
        run = RunSpec(epochs=cfg.optim.epochs, log_every=cfg.log_every, max_nonfinite_steps=cfg.max_nonfinite_steps,
                      device=str(cfg.device), amp=cfg.amp, compile=cfg.compile, deterministic=cfg.deterministic,
                      channels_last=cfg.channels_last, progress=cfg.progress)
        qspec = build_quant_spec(cfg)
        quantized = not qspec.is_full_precision
        bits = run_info.bits_label(qspec.w_bits, qspec.a_bits, qspec.g_bits)
        labels = {"task": str(cfg.task._target_).split(".")[-2], "model": run_info.model_label(cfg.model),
                  "data": run_info.data_label(cfg.data), "quantizer": run_info.quantizer_label(cfg.quant.grad, bits),
                  "bits": bits, "seed": cfg.seed}
        wandb_spec = WandbSpec(mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                               group=cfg.logger.group, job_type=f"{labels['quantizer']}-{bits}",
                               tags=(labels["model"], labels["data"], labels["quantizer"], bits, *cfg.logger.tags))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    run_dir = Path(cfg.run_dir)
    previous = read_summary(run_dir)
    if previous and previous.get("status") == "finished":
        log.info(f"{run_dir} already finished; skipping (delete its summary.json to run it again)")
        return previous

    # -- objects ------------------------------------------------------------------------------------------------
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if run.device == "auto" else run.device)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    task = instantiate(cfg.task)
    try:
        bundle = instantiate(cfg.data)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e
    model = instantiate(cfg.model, **bundle.model_kwargs)
    if quantized:
        quantize_(model, qspec)
    model.to(device)
    if run.channels_last:  # ~1.4x faster convolutions on CPU (oneDNN) and on tensor cores
        model.to(memory_format=torch.channels_last)
    intervals = quant_parameters(model) if quantized else []
    interval_ids = {id(p) for p in intervals}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in interval_ids]
    optimizers = [instantiate(cfg.optim.optimizer)(weights)]
    if intervals:  # the paper trains the quantizer intervals with their own Adam, no weight decay (METHODS 1.4)
        optimizers.append(torch.optim.Adam(intervals, lr=cfg.quant.interval_lr, fused=True))
    scheduler = instantiate(cfg.optim.scheduler)(optimizers[0], steps_per_epoch=len(bundle.train), epochs=run.epochs)
    step_model = torch.compile(model) if run.compile else model
    params = weights + intervals

    # -- resume -------------------------------------------------------------------------------------------------
    ckpt = checkpoint.load(run_dir)
    start_epoch, step, best, final = 0, 0, {}, {}
    if ckpt:
        model.load_state_dict(ckpt["model"])
        for opt, state in zip(optimizers, ckpt["optimizers"]):
            opt.load_state_dict(state)
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step, best, final = ckpt["epoch"], ckpt["step"], ckpt["best"], ckpt["final"]
        checkpoint.set_rng_state(ckpt["rng"])
        log.info(f"resuming {run_dir} at epoch {start_epoch} (step {step})")
    config = run_info.resolved(cfg)
    atomic.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic.write_json(run_dir / "summary.json", {"status": "running", "error": None, "name": cfg.name,
                                                 "run_id": run_dir.name, **labels})
    logger = RunLogger(run_dir, wandb_spec, run_name=f"{cfg.name}/{run_dir.name}", config=config,
                       wandb_id=ckpt["wandb_id"] if ckpt else None, resume_step=step if ckpt else -1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if run.amp and device.type == "cuda" else nullcontext()
    primary = f"test/{task.metric}"
    started = time.perf_counter()
    try:
        if quantized and not ckpt:  # LBT's first-batch warm-up of gamma; no optimizer step (no-op for others)
            bundle.train.set_epoch(0)
            first = task.to_device(next(iter(bundle.train)), device)
            warmup_grad_intervals(step_model, lambda: task.loss(step_model, first))
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)

        # -- loop: no host sync except on logging steps --------------------------------------------------------
        loss_sum = torch.zeros((), device=device)
        skipped = torch.zeros((), device=device)  # steps skipped for non-finite gradients, in total
        skipped_run = torch.zeros((), device=device)  # ... in a row
        for epoch in range(start_epoch, run.epochs):
            bundle.train.set_epoch(epoch)
            model.train()
            window_start, window_steps, window_samples = time.perf_counter(), 0, 0
            bar = tqdm(bundle.train, desc=f"epoch {epoch + 1}/{run.epochs}", disable=not run.progress, leave=False)
            for batch in bar:
                logging_step = (step + 1) % run.log_every == 0 or step == 0
                if logging_step and quantized:
                    set_recording(model, True)
                batch = task.to_device(batch, device)
                with autocast:
                    loss = task.loss(step_model, batch)
                loss.backward()
                nonfinite = step_optimizers(optimizers, params)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                scheduler.step()
                loss_sum += loss.detach().float()
                skipped += nonfinite
                skipped_run = (skipped_run + 1) * nonfinite
                step, window_steps, window_samples = step + 1, window_steps + 1, window_samples + task.batch_size(batch)
                if not logging_step:
                    continue
                stats = {}
                if quantized:
                    set_recording(model, False)
                    stats = drain_grad_stats(model)
                mean_loss, n_skipped, n_in_row = (torch.stack([loss_sum / window_steps, skipped, skipped_run])).tolist()
                if n_in_row >= run.max_nonfinite_steps:
                    raise RuntimeError(f"{int(n_in_row)} steps in a row had non-finite gradients (step {step}): "
                                       f"lower optim.optimizer.lr or use more gradient bits")
                elapsed = time.perf_counter() - window_start
                logger.log({"train/loss": mean_loss, "train/lr": optimizers[0].param_groups[0]["lr"],
                            "train/img_per_s": window_samples / elapsed, "train/skipped_steps": n_skipped, **stats},
                           step=step, epoch=epoch)
                bar.set_postfix(loss=f"{mean_loss:.3f}")
                loss_sum.zero_()
                window_start, window_steps, window_samples = time.perf_counter(), 0, 0

            model.eval()
            with torch.no_grad(), autocast:
                final = {f"test/{k}": v for k, v in task.evaluate(step_model, bundle.test, device).items()}
            if not best or final[primary] > best[primary]:
                best = dict(final)
            logger.log(final, step=step, epoch=epoch)
            log.info(f"epoch {epoch + 1}/{run.epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in final.items()))
            checkpoint.save(run_dir, model=model.state_dict(), optimizers=[o.state_dict() for o in optimizers],
                            scheduler=scheduler.state_dict(), epoch=epoch + 1, step=step, best=best, final=final,
                            wandb_id=logger.wandb_id)
    except BaseException:
        logger.finish(exit_code=1)
        raise

    summary = {"status": "finished", "error": None, "name": cfg.name, "run_id": run_dir.name, **labels,
               "metric": primary, "final": final, "best": best, "epochs": run.epochs, "steps": step,
               "wall_time_s": round(time.perf_counter() - started, 2), "versions": run_info.versions(),
               "config": config}
    atomic.write_json(run_dir / "summary.json", summary)
    logger.summary(summary)
    logger.finish()
    log.info(f"{primary}: final {final[primary]:.4g}, best {best[primary]:.4g} -> {run_dir}")
    return summary


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """A failed job leaves a summary saying why, so a sweep's table lists it instead of silently missing it."""
    run_dir = Path(cfg.run_dir)
    previous = read_summary(run_dir) or {}
    atomic.write_json(run_dir / "summary.json", {**previous, "status": "failed", "name": cfg.name,
                                                 "run_id": run_dir.name, "error": f"{type(error).__name__}: {error}"})


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return train(cfg)
    except ConfigError as e:
        if multirun:  # one bad job must not stop the rest of the sweep
            record_failure(cfg, e)
            log.error(f"job failed: {e}")
            return None
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        record_failure(cfg, e)
        if multirun:
            log.exception(f"job failed: {type(e).__name__}: {e}")
            return None
        raise


if __name__ == "__main__":
    error = cli.check_group_overrides(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
