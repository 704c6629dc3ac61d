"""Atomic writes: a reader (or a crash) never sees a half-written file.

Write to a temporary file in the same folder, fsync, then `os.replace` (atomic on POSIX and Windows).
"""
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text), "w")


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), "wb")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def torch_save(path: Path, obj: Any) -> None:
    import torch  # here, not at the top: the results tools write tables and PNGs without loading torch

    _atomic(path, lambda f: torch.save(obj, f), "wb")
