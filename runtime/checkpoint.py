"""Checkpoints that make a killed run resume bit-exactly (on CPU) at the last finished epoch.

Everything that decides the future of a run is saved: model (incl. quantizer state such as per-layer gamma,
which lives in buffers), optimizers, LR scheduler, RNG states (stochastic rounding draws from torch's global
RNG), the best metrics so far and the W&B run id so a resumed run continues the same W&B run.

Two files: `checkpoint.pt` (newest) and `checkpoint.prev.pt` (the one before it). Both are replaced atomically and
there is never a moment with neither, so a file truncated by a full disk, a quota or a bad copy costs one
checkpoint interval, not the run.
"""
import logging
from pathlib import Path
from typing import Any

import torch

from runtime import atomic

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
BEST_NAME = "best.pt"  # the best epoch's model (save_best)

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No readable checkpoint in a run folder that has checkpoint files; the message is one line saying what to do."""


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
    """Write `run_dir/checkpoint.pt` atomically, keeping the one it replaces as `checkpoint.prev.pt`.

    `state` holds plain objects and state_dicts; `rng` defaults to this process's RNG state (the trainer passes
    every rank's under DDP). A full disk raises a one-line OSError and leaves both files as they were.
    """
    run_dir = Path(run_dir)
    atomic.torch_save(run_dir / CHECKPOINT_NAME, {"rng": rng_state(), **state}, previous=run_dir / PREVIOUS_NAME)


def save_best(run_dir: Path, model_state: dict, *, metrics: dict[str, float], epoch: int, step: int) -> None:
    """Write `run_dir/best.pt` atomically: the model's state_dict (weights and quantizer state) of the best epoch
    so far, with its metrics, 1-based epoch and step; `model.init_from` and eval.py read it."""
    atomic.torch_save(Path(run_dir) / BEST_NAME, {"model": model_state, "metrics": metrics, "epoch": epoch,
                                                  "step": step})


def _read(path: Path) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds RNG states and plain dicts written by this code, not foreign files.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a checkpoint dict")
    return state


def _reason(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def load(run_dir: Path, *, world: int = 1) -> dict[str, Any] | None:
    """The newest readable checkpoint of `run_dir`, or None when it has none (a fresh run).

    A truncated or corrupt `checkpoint.pt` falls back to `checkpoint.prev.pt` with a one-line warning naming the bad
    file; when no file can be read, raises CheckpointError naming the files to delete. A checkpoint written by
    another number of processes than `world` is a CheckpointError too (every rank's RNG and data shard depend on it).
    """
    state = _load_readable(Path(run_dir))
    if state and len(state.get("rng", [None])) != world:
        raise CheckpointError(f"{run_dir} was checkpointed by {len(state['rng'])} process(es), this run has {world}: "
                              f"resume with the same number of ranks, or choose another name=... to start over")
    return state


def _load_readable(run_dir: Path) -> dict[str, Any] | None:
    newest, previous = run_dir / CHECKPOINT_NAME, run_dir / PREVIOUS_NAME
    problems = []  # (file, why) for each file that exists but cannot be read
    for path in (newest, previous):
        if not path.exists():
            continue
        try:
            state = _read(path)
        except Exception as err:  # noqa: BLE001 - zip, pickle, EOF and OS errors all mean "not usable"
            problems.append((path, _reason(err)))
            continue
        if path == previous:
            why = f"{problems[0][0]} is unreadable ({problems[0][1]})" if problems else f"{newest} is missing"
            log.warning(f"{why}; resuming from the checkpoint before it, {previous}")
        return state
    if not problems:
        return None
    if len(problems) == 2:
        raise CheckpointError(f"{newest} ({problems[0][1]}) and {previous} ({problems[1][1]}) are both unreadable: "
                              f"delete them to start this run over")
    (bad, why), = problems
    raise CheckpointError(f"{bad} is unreadable ({why}) and there is no other checkpoint to resume from: "
                          f"delete it to start this run over")
