"""Checkpoints that make a killed run resume bit-exactly (on CPU) at the last finished epoch.

Everything that decides the future of a run is saved: model (incl. quantizer state such as per-layer gamma,
which lives in buffers), optimizers, LR scheduler, RNG states (stochastic rounding draws from torch's global
RNG), the best metrics so far and the W&B run id so a resumed run continues the same W&B run.
"""
from pathlib import Path
from typing import Any

import torch

from runtime import atomic

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, **state: Any) -> None:
    """Write `run_dir/checkpoint.pt` atomically; `state` holds plain objects and state_dicts."""
    atomic.torch_save(Path(run_dir) / CHECKPOINT_NAME, {**state, "rng": rng_state()})


def load(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    # weights_only=False: the checkpoint holds RNG states and plain dicts written by this code, not foreign files.
    return torch.load(path, map_location="cpu", weights_only=False)
