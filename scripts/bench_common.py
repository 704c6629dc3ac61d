"""What every benchmark script shares: a run built as the trainer builds it, a device sync, writing the report.

Each bench_*.py builds its runs with `build_run`: the config composed exactly as `python train.py <overrides>`
composes it, checked by assemble.read_specs and built by assemble.assemble, then warmed up on its first batch as
train.fit does. It times `Run.train_step` (the step a run takes), variants interleaved in one process, and reports
ratios.
"""
from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from assemble import Run, assemble, read_specs
from runtime import atomic, distributed
from runtime.cli import CONFIG_DIR


def compose_config(overrides: list[str]) -> DictConfig:
    """configs/config.yaml with `overrides`, as `python train.py <overrides>` composes it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*overrides, "run_id=bench"])


def build_run(overrides: list[str], *, batch_size: int, image_size: int, in_channels: int = 3,
              steps_per_epoch: int = 1, device: str = "cpu", compile: bool = False,
              dist: distributed.Dist | None = None) -> tuple[Run, tuple]:
    """(run, its first batch on the run's device): `python train.py <overrides>`'s run, up to its first step.

    The data is the in-memory synthetic set (no files), `steps_per_epoch` batches of `batch_size` per rank of
    `in_channels` x `image_size`^2 images, so the LR schedules and APT's schedule span
    steps_per_epoch x optim.epochs steps (pass `optim.epochs=N` to make them long). `dist`: an existing process
    group's Dist (several ranks); otherwise a single process on `device`. After assembly the quantizers are warmed
    up on the first batch and the gradients zeroed, as train.fit does for a fresh run.
    """
    world = dist.world if dist is not None else 1
    cfg = compose_config([*overrides, "data=synthetic", f"data.image_size={image_size}",
                          f"data.in_channels={in_channels}", f"data.batch_size={batch_size}",
                          f"data.num_train={batch_size * world * steps_per_epoch}", f"data.num_test={batch_size}",
                          f"device={device if dist is None else dist.device}", f"compile={str(compile).lower()}"])
    specs = read_specs(cfg)
    run = assemble(cfg, specs, dist if dist is not None else distributed.setup(specs.run.device))
    if run.dist.enabled:  # as train.train: each rank draws its own rounding noise
        torch.manual_seed(cfg.seed * 1000 + run.dist.rank + 1)
    run.bundle.train.set_epoch(0)  # from here on exactly train.fit's first-batch warm-up
    first = run.task.to_device(next(iter(run.bundle.train)), run.device)
    run.quant.warm_up(lambda: run.task.loss(run.model, first))  # the bare model: no DDP hooks
    for opt in run.optimizers:
        opt.zero_grad(set_to_none=True)
    return run, first


def sync(device: torch.device) -> None:
    """Wait for queued GPU work before reading a clock (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit_report(report: str, out: str | None) -> None:
    """Print the Markdown report and, with `out`, write it there atomically."""
    print(report)
    if out:
        atomic.write_text(Path(out), report)
