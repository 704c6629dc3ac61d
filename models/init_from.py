"""`model.init_from=<path>`: start a run (QAT) from trained full-precision weights instead of a random init.

Accepted: a run folder of this project (the model weights of its `checkpoint.pt`), or a file saved with torch.save
holding a state_dict, or a dict with one under "state_dict", "model" or "model_state" (timm's and torchvision's
training scripts save these). Weights load into the freshly built model BEFORE quantization (and before an NCE
supernet is made), so the quantizers' intervals initialise from the loaded weights on the first batch as usual
(s_W from their std, docs/methods.md §1.4). A quantized run's quantizer state (`*.wq.*`, `*.aq.*`, `*.gq.*`) is not
loaded: the new run's bit-widths start their own. Names must match exactly (a "module." prefix left by DDP is
removed), and so must shapes: any difference is one ValueError naming the first keys.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

CHECKPOINT_NAME = "checkpoint.pt"  # runtime.checkpoint's file in a run folder
NESTED_KEYS = ("state_dict", "model", "model_state")
QUANTIZER_PARTS = (".wq.", ".aq.", ".gq.")
SHOWN = 3


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    file = path / CHECKPOINT_NAME if path.is_dir() else path
    if not file.is_file():
        where = f"{path} has no {CHECKPOINT_NAME} (not a finished or checkpointed run folder)" if path.is_dir() \
            else f"{path} does not exist"
        raise FileNotFoundError(f"model.init_from={path}: {where}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - zip, pickle, EOF: the file is not a checkpoint
        raise ValueError(f"model.init_from={path}: {file} is not readable by torch.load ({type(err).__name__})") from None
    for key in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.init_from={path}: {file} holds no state_dict (a dict of tensors, or one under "
                         f"{', '.join(NESTED_KEYS)})")
    return {k.removeprefix("module."): v for k, v in state.items()
            if not any(part in f".{k}" for part in QUANTIZER_PARTS)}


def load_init(model: nn.Module, path: str | Path) -> None:
    """Copy the weights at `path` into `model` (full precision, not yet quantized); strict names and shapes."""
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    reshaped = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        parts = [f"{label} {', '.join(keys[:SHOWN])}{' ...' if len(keys) > SHOWN else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("other shape", reshaped)) if keys]
        raise ValueError(f"model.init_from={path} does not fit {type(model).__name__}: {'; '.join(parts)}; "
                         f"choose the model it was trained as")
    model.load_state_dict(state)
