"""Learning-rate schedules stepped once per iteration, built from the number of steps the trainer knows.

Configs select them with `_partial_: true`; the trainer supplies `steps_per_epoch` and `epochs`.
"""
import math

import torch


def cosine(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0,
           final_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to `final_ratio` x the base learning rate."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def multistep(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, epochs: int,
              milestones: tuple[int, ...] = (80, 120), gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """x`gamma` at each milestone epoch (the LBT CIFAR recipe: epochs 80 and 120 of 160). `epochs` is unused."""
    bounds = [m * steps_per_epoch for m in milestones]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: gamma ** sum(step >= b for b in bounds))


def constant(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
