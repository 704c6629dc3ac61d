"""One optimizer step for a run's optimizers that skips a step whose gradients are not finite."""
from __future__ import annotations

import torch


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
