"""The offline dashboards beside W&B (`logger=tensorboard`, `logger=csv`): what runtime.run_logger hands them.

TensorBoard: the run folder is the event folder, so `tensorboard --logdir results/<name>` lists a sweep's runs by
their run ids and overlays their curves. One event file per process; TensorBoard reads a folder's files as one run.
A resumed process opens its writer with `purge_step` = the checkpoint's step + 1: TensorBoard (and its
EventAccumulator) then hides every event a killed process logged at or past that step, so the steps that are logged
again are drawn once, as in metrics.jsonl (runtime.run_logger truncates it the same way).

CSV: `metrics.csv` is metrics.jsonl as one wide table (a row per logged step, a column per key in order of first
appearance, empty where a row lacks the key), written atomically when the run ends. JSONL stays the record: rows with
different keys (training windows, evaluations) append to it without rewriting, which a CSV header cannot.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import atomic

CSV_NAME = "metrics.csv"


@dataclass(frozen=True, kw_only=True)
class TensorBoardSpec:
    flush_secs: float = 30.0

    def __post_init__(self):
        if isinstance(self.flush_secs, bool) or not isinstance(self.flush_secs, (int, float)) or self.flush_secs <= 0:
            raise ValueError(f"logger.tensorboard.flush_secs={self.flush_secs} is invalid: use seconds > 0")


class TensorBoardSink:
    """Scalars into `<run_dir>/events.out.tfevents.*`, under the same tags and steps as metrics.jsonl."""

    def __init__(self, run_dir: Path, spec: TensorBoardSpec, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported here: runs without TensorBoard never pay for it

        self._writer = SummaryWriter(log_dir=str(run_dir), purge_step=resume_step + 1,
                                     flush_secs=spec.flush_secs)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, global_step=step)

    def summary(self, summary: dict[str, Any]) -> None:
        """The final and best metrics as one text card (the scalars already hold them at their steps)."""
        rows = [f"| {part}/{key} | {value:.6g} |" for part in ("final", "best")
                for key, value in (summary.get(part) or {}).items()]
        if rows:
            self._writer.add_text("summary", "\n".join(["| metric | value |", "|---|---|", *rows]))

    def finish(self) -> None:
        self._writer.close()


def write_csv(jsonl: Path, out: Path) -> None:
    """metrics.jsonl -> one wide CSV (see module docstring), atomically; rows that do not parse are skipped."""
    rows, columns = [], {}
    for line in jsonl.read_text().splitlines() if jsonl.exists() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        rows.append(row)
        columns.update(dict.fromkeys(row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out, text.getvalue())
