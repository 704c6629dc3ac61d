"""The one trainer: any architecture x bit-width (W/A/G) x gradient quantizer x task, from one Hydra config.

Reads top to bottom: config -> checked specs -> folder checks -> objects (assemble.py) -> resume -> loop -> summary.
The config is read here and in assemble.py only. It runs one process, every rank of a `torchrun` job, and every job
of a joblib / submitit / SLURM sweep.

    python train.py                                             # ResNet-20, Fashion-MNIST, W4A4G4, LBT
    python train.py bits=8 quant/grad=mse optim.epochs=1        # any axis from the command line
    python train.py -m bits=4,8 quant/grad=minmax,mse,lbt seed=0,1   # a sweep (Hydra multirun)
    torchrun --nproc_per_node=4 train.py experiment=lbt_imagenet_resnet18   # data-parallel on 4 GPUs
"""
import logging
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from assemble import ConfigError, Run, assemble, read_specs
from optim.trs import drain_transition_stats
from runtime import atomic, checkpoint, cli, distributed, run_folder, run_info
from runtime.compile import CompileTally, compile_report, fresh_compile_state
from runtime.preemption import PreemptionGuard
from runtime.run_lock import RunInUseError, run_lock
from runtime.run_folder import RunFolderRefused, check_run_folder, record_failure, remove_empty_run_dir
from runtime.run_logger import NullLogger, RunLogger
from reports.sweep_summary import mark_refused
from runtime.train_state import TrainState

log = logging.getLogger("train")
OmegaConf.register_new_resolver(
    "run_id", lambda overrides: cli.run_id(overrides, world=distributed.launched_world_size()), replace=True)


def train(cfg: DictConfig, choices: dict[str, str] | None = None, overrides: list[str] | None = None) -> dict:
    """Train one run. `choices`: Hydra's group choices (labels for tables and W&B); `overrides`: the command line's,
    kept in summary.json (the run folder's name may be shortened)."""
    specs = read_specs(cfg, choices)  # every bad value fails here, before data is touched
    run_dir = Path(cfg.run_dir)
    finished = check_run_folder(run_dir, run_info.resolved(cfg))
    if finished:
        log.info(f"{run_dir} already finished; skipping (delete its summary.json to run it again)")
        return finished
    dist = distributed.setup(specs.run.device)
    with ExitStack() as cleanup:
        cleanup.callback(distributed.teardown, dist)
        compiling = fresh_compile_state()  # the summary says what compiling cost and what ran eagerly
        run = assemble(cfg, specs, dist)
        ckpt = checkpoint.load(run_dir, world=dist.world)  # or checkpoint.prev.pt; CheckpointError: bad input
        state = TrainState.from_checkpoint(ckpt, dist.device)
        if ckpt:
            run.load_state_dict(ckpt)
            checkpoint.set_rng_state(ckpt["rng"][dist.rank])
        # -- from here on this process owns the run folder: everything above only read (a rejected run writes nothing)
        if dist.is_main:
            cleanup.enter_context(run_lock(run_dir))  # a second process on the same folder refuses in one line
            atomic.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            atomic.write_json(run_dir / "summary.json", {"status": "running", "error": None, "name": cfg.name,
                                                         "run_id": run_dir.name, **specs.labels})
            logger = RunLogger(run_dir, specs.logger, run_name=f"{cfg.name}/{run_dir.name}",
                               config=run_info.resolved(cfg), wandb_id=ckpt.get("wandb_id") if ckpt else None,
                               resume_step=state.step if ckpt else -1)
        else:
            logger = NullLogger()
        log.info("; ".join([f"data: {run.bundle.source}", *run.notes]))
        if ckpt:
            log.info(f"resuming {run_dir} at epoch {state.epoch + 1}, batch {state.batch} (step {state.step})")
        elif dist.enabled:  # each rank draws its own rounding noise (a resumed run restores its RNG)
            torch.manual_seed(cfg.seed * 1000 + dist.rank + 1)
        started = time.perf_counter()
        try:
            fit(run, state, logger, run_dir, fresh=not ckpt)
        except BaseException:
            logger.finish(exit_code=1)
            raise
        return finish(cfg, run, state, logger, run_dir, overrides or [], compiling, started)


def fit(run: Run, state: TrainState, logger, run_dir: Path, *, fresh: bool) -> None:
    """Epochs of steps (no host sync but on logging steps), each followed by an evaluation and a checkpoint."""
    spec, dist = run.specs.run, run.dist
    guard = PreemptionGuard(every_min=spec.checkpoint_every_min, dist=dist,
                            sync_every=spec.log_every if dist.enabled else 1)

    def save() -> None:
        """Everything that decides the rest of the run; every rank's RNG (their rounding noise differs)."""
        rngs = dist.gather(checkpoint.rng_state())
        fields = state.checkpoint_fields()  # floats of the window's sums: on every rank, like the gather
        if dist.is_main:
            checkpoint.save(run_dir, **run.state_dict(), **fields, rng=rngs, wandb_id=logger.wandb_id)
        guard.saved()

    if fresh:  # first-batch init of the intervals and LBT's gamma warm-up; no optimizer step
        run.bundle.train.set_epoch(0)
        first = run.task.to_device(next(iter(run.bundle.train)), run.device)
        run.quant.warm_up(lambda: run.task.loss(run.model, first))  # the bare model: no DDP hooks
        for opt in run.optimizers:
            opt.zero_grad(set_to_none=True)
        if spec.eval_at_start:  # model.init_from: what the loaded network scores, quantized, before any step
            evaluate(run, state, logger, start=True)
    with guard:
        while state.epoch < spec.epochs:
            train_epoch(run, state, logger, guard, save)
            if evaluate(run, state, logger) and dist.is_main:  # a new best epoch: keep its model (best.pt)
                checkpoint.save_best(run_dir, run.model.state_dict(), metrics=state.best, epoch=state.epoch,
                                     step=state.step)
            save()


def train_epoch(run: Run, state: TrainState, logger, guard: PreemptionGuard, save) -> None:
    spec, dist = run.specs.run, run.dist
    run.bundle.train.set_epoch(state.epoch, start_batch=state.batch)
    run.model.train()
    window_start, window_samples = time.perf_counter(), 0
    bar = tqdm(run.bundle.train, desc=f"epoch {state.epoch + 1}/{spec.epochs}", initial=state.batch,
               disable=not (spec.progress and dist.is_main), leave=False)
    for batch in bar:
        logging_step = (state.step + 1) % spec.log_every == 0 or state.step == 0
        run.quant.before_step(state.step, logging_step)  # APT's check cadence; statistics on logging steps
        batch = run.task.to_device(batch, run.device)
        state.record_step(*run.train_step(batch))
        window_samples += run.task.batch_size(batch)
        run.search.step(run.step_model, run.task, state.step)  # NCE: the width logits' step on a held-out batch
        if logging_step:
            elapsed = time.perf_counter() - window_start
            mean_loss = log_window(run, state, logger, img_per_s=window_samples * dist.world / elapsed)
            bar.set_postfix(loss=f"{mean_loss:.3f}")
            window_start, window_samples = time.perf_counter(), 0
        if guard.due(state.step):  # every checkpoint_every_min minutes, or the cluster's warning signal
            save()
            guard.stop_if_signalled()


def log_window(run: Run, state: TrainState, logger, *, img_per_s: float) -> float:
    """A logging step: the window's mean loss, lr, speed and skipped steps, with the quantizers', TRS's and NCE's
    statistics; one host sync. Stops the run after too many non-finite steps in a row."""
    stats = run.quant.drain()
    stats.update(drain_transition_stats(run.schedulers))  # TRS: target, measured rate, U_t
    stats.update(run.search.stats())  # NCE: width distributions, expected cost vs budget
    mean_loss, skipped, in_row = state.close_window()
    if in_row >= run.specs.run.max_nonfinite_steps:
        raise RuntimeError(f"{int(in_row)} steps in a row had non-finite gradients (step {state.step}): "
                           f"lower optim.optimizer.lr or use more gradient bits")
    logger.log({"train/loss": mean_loss, "train/lr": float(run.optimizers[0].param_groups[0]["lr"]),
                "train/img_per_s": img_per_s, "train/skipped_steps": skipped, **stats}, step=state.step,
               epoch=state.epoch)
    return mean_loss


def evaluate(run: Run, state: TrainState, logger, *, start: bool = False) -> bool:
    """Every rank evaluates its shard (the task sums over ranks): test/* after an epoch, then the ranks must still
    hold the same model (True: the best epoch so far); start/* before the first step."""
    metrics = {f"{'start' if start else 'test'}/{k}": v for k, v in run.evaluate().items()}
    epoch = state.epoch
    logger.log(metrics, step=state.step, epoch=epoch)
    if start:
        state.start = metrics
        log.info("before training: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return False
    improved = state.end_epoch(metrics, primary=f"test/{run.task.metric}")
    diverged = distributed.replica_mismatch(run.model, run.dist)
    if diverged:  # a silent divergence would make every later number wrong
        raise RuntimeError(f"ranks hold different values of {len(diverged)} tensors after epoch {epoch + 1}, e.g. "
                           f"{', '.join(diverged[:3])}")
    log.info(f"epoch {epoch + 1}/{run.specs.run.epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return improved


def finish(cfg, run: Run, state: TrainState, logger, run_dir: Path, overrides: list[str], compiling: CompileTally,
           started: float) -> dict:
    """summary.json (atomically), W&B's summary; a search's found network is written as a model config."""
    dist, primary = run.dist, f"test/{run.task.metric}"
    found = run_folder.write_found(run_dir, run.search.finish()) if dist.is_main else {}  # NCE: the found network
    compiled = compile_report(compiling, run.compiled)  # eager_fallbacks, compile_s
    if compiled["eager_fallbacks"]:  # a compiled run that is partly eager is slow for a reason the user should see
        log.warning(f"compile=true, but parts of this run's step ran eagerly: {compiled['eager_fallbacks']}")
    summary = {"status": "finished", "error": None, "name": cfg.name, "run_id": run_dir.name, **run.specs.labels,
               **found, "metric": primary, "start": state.start or None, "final": state.final, "best": state.best,
               "best_epoch": state.best_epoch, "best_checkpoint": checkpoint.BEST_NAME, "epochs": run.specs.run.epochs,
               "steps": state.step, "world_size": dist.world, "overrides": overrides, **compiled,
               "wall_time_s": round(time.perf_counter() - started, 2), "finished_at": round(time.time(), 3),
               "versions": run_info.versions(), "config": run_info.resolved(cfg)}
    if dist.is_main:
        atomic.write_json(run_dir / "summary.json", summary)
        logger.summary(summary)
    logger.finish()
    log.info(f"{primary}: final {state.final[primary]:.4g}, best {state.best[primary]:.4g} -> {run_dir}")
    return summary


@hydra.main(version_base="1.3", config_path=str(cli.CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return train(cfg, dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task))
    except (RunFolderRefused, RunInUseError, ConfigError, checkpoint.CheckpointError) as e:
        refused = isinstance(e, (RunFolderRefused, RunInUseError))  # the folder is not ours to write a failure into
        if multirun:  # one bad job must not stop the rest of the sweep; it counts as failed
            if refused:
                mark_refused(Path(cfg.run_dir))  # not as the folder's earlier run
            else:
                record_failure(cfg, e)
            log.error(f"job {'refused' if refused else 'failed'}: {e}")
            return None
        print(f"error: {e}", file=sys.stderr)  # a rejected command leaves no file and no folder, train.log included
        remove_empty_run_dir(cfg)
        sys.exit(2)
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
