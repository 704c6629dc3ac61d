"""What every benchmark script shares: the trainer's own config, a device sync, and writing the report.

Each bench_*.py builds its steps from the trainer's pieces (train.build_quant_spec, train.build_optimizers,
train.train_step) on a config composed exactly as a run composes it, times variants interleaved in one process, and
reports ratios.
"""
from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from runtime import atomic
from runtime.cli import CONFIG_DIR


def compose_config(overrides: list[str]) -> DictConfig:
    """configs/config.yaml with `overrides`, as `python train.py <overrides>` composes it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*overrides, "run_id=bench"])


def sync(device: torch.device) -> None:
    """Wait for queued GPU work before reading a clock (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit_report(report: str, out: str | None) -> None:
    """Print the Markdown report and, with `out`, write it there atomically."""
    print(report)
    if out:
        atomic.write_text(Path(out), report)
