"""Hydra callback: when a multirun sweep ends, write its results table and log it to W&B once.

Registered in configs/config.yaml under `hydra.callbacks` (see the README); runs in the launching process
after every job of the sweep has returned (also with the joblib and SLURM launchers). It reads the
`summary.json` of every run in the sweep folder (`hydra.sweep.dir`, i.e. results/<name>/), so runs left
there by an earlier sweep of the same experiment are part of the table too: the table describes the
experiment folder, which is what `scripts/table.py --name <name>` also shows.

Nothing here may fail the sweep: the runs are done and saved; a reporting problem is logged, not raised.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runtime.results_table import CSV_COLUMNS, ResultTable, build_table, render_markdown, table_rows, write_table

log = logging.getLogger(__name__)


def count_statuses(table: ResultTable) -> dict[str, int]:
    """{status: number of runs} behind a table: counted runs are "finished", the excluded keep their status."""
    counts = {"finished": sum(c.final.n for s in table.sections for c in s.cells.values()), "failed": 0}
    for r in table.excluded:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {' '.join(lines[:2]) if lines else ''}"


class SweepSummary(Callback):
    """Writes `<sweep dir>/<filename>.md|.csv` and logs a wandb.Table in one extra W&B run.

    The W&B run has job_type "sweep-summary" and group = the experiment name (so it sits beside the sweep's
    runs); its mode, project and entity are the sweep's `logger.mode/project/entity`; mode "disabled" skips W&B.
    """

    def __init__(self, *, filename: str = "table") -> None:
        if not filename or "/" in filename:
            raise ValueError(f"SweepSummary filename={filename!r} must be a plain file stem like 'table'")
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._summarize(config)
        except Exception as err:  # noqa: BLE001 - a report must never turn a finished sweep into a failure
            log.warning("sweep summary skipped: %s", _one_line(err))

    def _summarize(self, config: DictConfig) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        name = OmegaConf.select(config, "name", default=sweep_dir.name)
        table = build_table(sweep_dir)
        md, csv_path = write_table(table, sweep_dir / self.filename)
        counts = count_statuses(table)
        others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in ("finished", "failed"))
        print(f"sweep {name}: {counts.get('finished', 0)} finished, {counts.get('failed', 0)} failed"
              f"{', ' + others if others else ''}; table: {md}")
        mode = str(OmegaConf.select(config, "logger.mode", default="disabled"))
        if mode == "disabled":
            return
        try:
            self._log_wandb(table, sweep_dir, name, mode, counts, config)
        except Exception as err:  # noqa: BLE001 - the table is on disk; W&B being down must not fail the sweep
            log.warning("sweep summary: W&B logging skipped (table is in %s): %s", md, _one_line(err))

    @staticmethod
    def _log_wandb(table: ResultTable, sweep_dir: Path, name: str, mode: str, counts: dict[str, int],
                   config: DictConfig) -> None:
        import wandb  # only when logging: keeps `--cfg` / disabled sweeps free of W&B start-up

        run = wandb.init(project=OmegaConf.select(config, "logger.project", default=None),
                         entity=OmegaConf.select(config, "logger.entity", default=None),
                         group=name, job_type="sweep-summary", name=f"{name}-summary", mode=mode,
                         dir=str(sweep_dir), config={"sweep_dir": str(sweep_dir), **counts})
        try:
            rows = table_rows(table)
            data = [[row[c] for c in CSV_COLUMNS] for row in rows]
            run.log({"sweep/table": wandb.Table(columns=list(CSV_COLUMNS), data=data)})
            run.summary.update({f"sweep/{status}": n for status, n in counts.items()})
            run.summary["sweep/markdown"] = render_markdown(table)
        finally:
            run.finish()
