"""Hydra callback: when a multirun sweep ends, write its results table, log it to W&B once, and make a sweep
with failed jobs exit non-zero.

Registered in configs/config.yaml under `hydra.callbacks` (see the README); `on_multirun_end` runs in the
launching process after every job of the sweep has returned (also with the joblib and SLURM launchers). The
table reads the `summary.json` of every run in the sweep folder (`hydra.sweep.dir`, i.e. results/<name>/), so
runs left there by an earlier sweep of the same experiment are part of the table too: the table describes the
experiment folder, which is what `scripts/table.py --name <name>` also shows.

The failure count is about this sweep's jobs only. `on_job_start` runs in whichever process runs a job (Hydra
pickles this callback into joblib/SLURM workers after `on_multirun_start` gave it the sweep's id) and leaves the
id in the job's folder (`.sweep_id`); at the end, the folders carrying this sweep's id are its jobs, and a job
whose summary.json does not say "finished" (failed, still "running" after a crash, unreadable, missing) failed.
Then one line goes to stderr and the process exits with status 1 (SystemExit is not an Exception, so Hydra's
callback runner and `run_and_report` let it through).

A reporting problem (unwritable table, W&B down) is logged, never raised: the runs are done and saved.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runtime import atomic
from reports.results import SUMMARY, read_summary
from reports.render_table import CSV_COLUMNS, render_markdown, table_rows, write_table
from reports.results_table import ResultTable, build_table

log = logging.getLogger(__name__)
#: file in each job's folder naming the sweep that last ran the job
SWEEP_ID_FILE = ".sweep_id"
#: file a refused job leaves beside SWEEP_ID_FILE: the folder's summary is another run's, not this sweep's job's
REFUSED_FILE = ".sweep_refused"


def mark_refused(run_dir: Path) -> None:
    """A job refused its folder (another config's run, or one in use): count it as failed, not as the folder's
    earlier run. Its only write there is this marker, beside the sweep id that `on_job_start` already left."""
    try:
        atomic.write_text(Path(run_dir) / REFUSED_FILE, (Path(run_dir) / SWEEP_ID_FILE).read_text())
    except OSError as err:
        log.warning("sweep summary: could not mark the refused job in %s: %s", run_dir, _one_line(err))


def count_statuses(table: ResultTable) -> dict[str, int]:
    """{status: number of runs} behind a table: counted runs are "finished", the excluded keep their status."""
    counts = {"finished": sum(c.runs for s in table.sections for c in s.cells.values()), "failed": 0}
    for r in table.excluded:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def sweep_job_statuses(sweep_dir: Path, sweep_id: str) -> dict[str, str]:
    """{job folder name: status} of the jobs of sweep `sweep_id` in `sweep_dir`; "missing" if no summary.json."""
    statuses = {}
    for marker in sorted(Path(sweep_dir).glob(f"*/{SWEEP_ID_FILE}")):
        try:
            if marker.read_text().strip() != sweep_id:
                continue
        except OSError:
            continue
        run_dir = marker.parent
        summary = read_summary(run_dir)
        refused = run_dir / REFUSED_FILE
        if refused.exists() and refused.read_text().strip() == sweep_id:
            statuses[run_dir.name] = "refused"
        elif summary is None:
            statuses[run_dir.name] = "unreadable" if (run_dir / SUMMARY).exists() else "missing"
        else:
            statuses[run_dir.name] = str(summary.get("status", "running"))
    return statuses


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {' '.join(lines[:2]) if lines else ''}"


class SweepSummary(Callback):
    """Writes `<sweep dir>/<filename>.md|.csv` and logs a wandb.Table in one extra W&B run; exits with status 1
    after a sweep in which some job failed.

    The W&B run has job_type "sweep-summary" and group = the experiment name (so it sits beside the sweep's
    runs); its mode, project and entity are the sweep's `logger.wandb.mode/project/entity`; a sweep without the W&B
    logger, or with mode "disabled", skips W&B.
    """

    def __init__(self, *, filename: str = "table") -> None:
        if not filename or "/" in filename:
            raise ValueError(f"SweepSummary filename={filename!r} must be a plain file stem like 'table'")
        self.filename = filename
        self.sweep_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_id is None:  # a single run (not a multirun): nothing to count
            return
        try:
            atomic.write_text(Path(str(config.hydra.runtime.output_dir)) / SWEEP_ID_FILE, self.sweep_id + "\n")
        except Exception as err:  # noqa: BLE001 - bookkeeping must not stop the job
            log.warning("sweep summary: could not mark the job folder: %s", _one_line(err))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        name = OmegaConf.select(config, "name", default=sweep_dir.name)
        md = None
        try:
            md = self._summarize(config, sweep_dir, name)
        except Exception as err:  # noqa: BLE001 - a report must never hide how the sweep went
            log.warning("sweep summary skipped: %s", _one_line(err))
        jobs = sweep_job_statuses(sweep_dir, self.sweep_id) if self.sweep_id else {}
        failed = sum(status != "finished" for status in jobs.values())
        see = md if md is not None else sweep_dir
        if failed:
            print(f"{failed}/{len(jobs)} jobs failed (see {see})", file=sys.stderr, flush=True)
            raise SystemExit(1)
        print(f"sweep {name}: {len(jobs)}/{len(jobs)} jobs finished (see {see})", flush=True)

    def _summarize(self, config: DictConfig, sweep_dir: Path, name: str) -> Path:
        table = build_table(sweep_dir)
        md, _ = write_table(table, sweep_dir / self.filename)
        mode = str(OmegaConf.select(config, "logger.wandb.mode", default="disabled"))
        if mode != "disabled":
            try:
                self._log_wandb(table, sweep_dir, name, mode, count_statuses(table), config)
            except Exception as err:  # noqa: BLE001 - the table is on disk; W&B being down must not hide it
                log.warning("sweep summary: W&B logging skipped (table is in %s): %s", md, _one_line(err))
        return md

    @staticmethod
    def _log_wandb(table: ResultTable, sweep_dir: Path, name: str, mode: str, counts: dict[str, int],
                   config: DictConfig) -> None:
        import wandb  # only when logging: keeps `--cfg` / disabled sweeps free of W&B start-up

        run = wandb.init(project=OmegaConf.select(config, "logger.wandb.project", default=None),
                         entity=OmegaConf.select(config, "logger.wandb.entity", default=None),
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
            wandb.teardown()  # finish() returns before the run's file is on disk (runtime/run_logger.py, finish)
