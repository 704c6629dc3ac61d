"""TrainState: where a run is (epoch, batch, step), what it reached (best, final) and its open logging window.

The loop advances one object and the checkpoint saves and restores it whole, so a resumed run continues from the
same values (on CPU, bit for bit) instead of from loose loop variables. The window's sums stay on the device
(no per-step host sync); they become floats only when a checkpoint is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainState:
    device: torch.device
    epoch: int = 0  # the epoch to run next (== epochs when training is done)
    batch: int = 0  # batches of `epoch` already taken
    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    best: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    start: dict[str, float] = field(default_factory=dict)  # the evaluation before the first step (eval_at_start)
    best_epoch: int | None = None  # 1-based epoch of `best` (its model: best.pt)
    window_steps: int = 0  # steps since the last logging step
    loss_sum: torch.Tensor = None  # summed loss of the window's steps
    skipped: torch.Tensor = None  # steps skipped for non-finite gradients, in total
    in_row: torch.Tensor = None  # ... in a row

    def __post_init__(self):
        for name in ("loss_sum", "skipped", "in_row"):
            value = getattr(self, name)
            setattr(self, name, torch.tensor(0.0 if value is None else float(value), device=self.device))

    def record_step(self, loss: torch.Tensor, nonfinite: torch.Tensor) -> None:
        self.loss_sum += loss.float()
        self.skipped += nonfinite
        self.in_row = (self.in_row + 1) * nonfinite
        self.step, self.batch, self.window_steps = self.step + 1, self.batch + 1, self.window_steps + 1

    def close_window(self) -> tuple[float, float, float]:
        """(mean loss of the window, skipped steps in total, skipped in a row): one host sync, on logging steps."""
        mean_loss, skipped, in_row = torch.stack([self.loss_sum / self.window_steps, self.skipped, self.in_row]).tolist()
        self.loss_sum.zero_()
        self.window_steps = 0
        return mean_loss, skipped, in_row

    def end_epoch(self, metrics: dict[str, float], primary: str) -> bool:
        """Close the epoch with its test metrics; True when they are the best so far (the caller keeps the model)."""
        self.final = dict(metrics)
        improved = not self.best or self.final[primary] > self.best[primary]
        if improved:
            self.best, self.best_epoch = dict(self.final), self.epoch + 1
        self.epoch, self.batch = self.epoch + 1, 0
        return improved

    def checkpoint_fields(self) -> dict[str, Any]:
        """The checkpoint's keys for this state (the format train.py has always written: old checkpoints resume)."""
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "best": self.best, "final": self.final,
                "start": self.start, "best_epoch": self.best_epoch,
                "accumulators": {"loss_sum": float(self.loss_sum), "window_steps": self.window_steps,
                                 "skipped": float(self.skipped), "in_row": float(self.in_row)}}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any] | None, device: torch.device) -> TrainState:
        if not ckpt:
            return cls(device=device)
        acc = ckpt["accumulators"]
        return cls(device=device, epoch=ckpt["epoch"], batch=ckpt["batch"], step=ckpt["step"], best=ckpt["best"],
                   final=ckpt["final"], start=ckpt.get("start", {}),
                   best_epoch=ckpt.get("best_epoch"), window_steps=acc["window_steps"], loss_sum=acc["loss_sum"],
                   skipped=acc["skipped"], in_row=acc["in_row"])
