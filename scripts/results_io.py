"""Reading run folders and writing result files: the one place that knows the run-folder contract.

The trainer (train.py) writes every run to `results/<name>/<run_id>/` with `config.yaml`, `metrics.jsonl`
(one JSON object per logging step / evaluation) and `summary.json` (status, error, what was run, final and
best metrics). `scripts/table.py`, `scripts/plot.py` and `runtime/sweep_summary.py` all read runs through
this module, so a change to the contract is made here once.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the label the trainer writes for full precision, both as `quantizer` and as `bits`
FULL_PRECISION = "fp32"


class ResultsError(ValueError):
    """A user-facing problem with the results folder or an argument; the message is one line."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run as read from its `summary.json`.

    `quantizer` is the display label: the trainer's quantizer name, except that a fixed-ratio run carries its
    clipping ratio ("fixed gamma=0.8"), because the paper reports gamma=0.8 and 0.6 as different methods
    (Kim et al. ECCV 2024, Table 1). `status` is "unreadable" when summary.json could not be parsed.
    """

    path: Path
    status: str
    error: str | None = None
    name: str = "?"
    run_id: str = "?"
    task: str = "?"
    metric: str = "?"
    model: str = "?"
    data: str = "?"
    quantizer: str = "?"
    bits: str = "?"
    seed: int | None = None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The final primary metric, or None when the run has none (failed, or finished before any eval)."""
        v = self.final.get(self.metric)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    @property
    def counts(self) -> bool:
        """Whether this run contributes to tables and accuracy plots."""
        return self.status == "finished" and self.value is not None

    @property
    def why_excluded(self) -> str:
        """One line saying why a run is not counted ("" if it is)."""
        if self.counts:
            return ""
        if self.status == "finished":
            return f"finished without a final {self.metric!r}"
        return f"{self.status}: {self.error}" if self.error else self.status


def metric_label(metric: str) -> str:
    """Column label of a metric key: "test/top1" -> "top1"."""
    return metric.rsplit("/", 1)[-1]


def bits_sort_key(bits: str) -> tuple:
    """Numeric order of W/A/G bit settings ("4/4/4" < "5/5/5" < "8/8/8" < "8/8/32"); full precision first."""
    if bits == FULL_PRECISION:
        return (0, ())
    try:
        return (1, tuple(int(b) for b in bits.split("/")))
    except ValueError:  # not W/A/G numbers: keep it, after the numeric ones
        return (2, (bits,))


def bits_slug(bits: str) -> str:
    """File-name form of a bit setting: "4/4/4" -> "w4a4g4" (the reference CSV's column names)."""
    parts = bits.split("/")
    if len(parts) == 3:
        return "".join(f"{role}{b}" for role, b in zip("wag", parts))
    return bits.replace("/", "-")


def _find_key(node: Any, key: str) -> Any:
    """First value stored under `key` anywhere inside nested dicts (depth-first), else None."""
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for child in node.values():
            found = _find_key(child, key)
            if found is not None:
                return found
    return None


def quantizer_label(summary: dict) -> str:
    """Display name of the gradient interval policy of a run (see RunRecord)."""
    quantizer = str(summary.get("quantizer", "?"))
    if quantizer == "fixed":
        # the ratio lives in the gradient-quantizer config; its key is "gamma" (METHODS.md 1.3)
        quant_cfg = (summary.get("config") or {}).get("quant")
        gamma = _find_key(quant_cfg, "gamma")
        if isinstance(gamma, (int, float)):
            return f"fixed gamma={gamma:g}"
    return quantizer


def read_summary(path: Path) -> RunRecord:
    """Parse one summary.json; a file that cannot be parsed becomes an "unreadable" record, never an exception."""
    run_dir = path.parent
    try:
        s = json.loads(path.read_text())
        if not isinstance(s, dict):
            raise ValueError(f"top level is {type(s).__name__}, not an object")
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        return RunRecord(path=run_dir, status="unreadable", error=f"{type(err).__name__}: {err}",
                         name=run_dir.parent.name, run_id=run_dir.name)
    seed = s.get("seed")
    return RunRecord(
        path=run_dir,
        status=str(s.get("status", "running")),
        error=s.get("error"),
        name=str(s.get("name", run_dir.parent.name)),
        run_id=str(s.get("run_id", run_dir.name)),
        task=str(s.get("task", "?")),
        metric=str(s.get("metric", "?")),
        model=str(s.get("model", "?")),
        data=str(s.get("data", "?")),
        quantizer=quantizer_label(s),
        bits=str(s.get("bits", "?")),
        seed=seed if isinstance(seed, int) else None,
        final=dict(s.get("final") or {}),
        best=dict(s.get("best") or {}),
    )


def load_runs(root: str | os.PathLike, *, name: str | None = None, task: str | None = None,
              pattern: str = "**/summary.json") -> list[RunRecord]:
    """All runs under `root` whose summary matches the filters, sorted by path (deterministic output).

    Raises ResultsError (one line) when `root` is not a folder or the filters leave nothing.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"results folder {str(root)!r} does not exist; pass --root with the folder "
                           "that holds <name>/<run_id>/summary.json")
    runs = [read_summary(p) for p in sorted(root.glob(pattern))]
    if not runs:
        raise ResultsError(f"no summary.json matching {pattern!r} under {str(root)!r}; run train.py first "
                           "or pass the right --root")
    selected = [r for r in runs if (name is None or r.name == name) and (task is None or r.task == task)]
    if not selected:
        names = sorted({r.name for r in runs})
        tasks = sorted({r.task for r in runs})
        raise ResultsError(f"no runs with name={name!r} task={task!r} under {str(root)!r}; "
                           f"names there: {names}, tasks: {tasks}")
    return selected


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of a run's metrics.jsonl; a missing file gives [], a torn last line (run killed
    mid-write) is dropped rather than failing the whole report."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file so readers never see it half-written: temp file in the same folder, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
