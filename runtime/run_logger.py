"""The one place metrics leave the trainer: a local JSONL file (always), W&B, TensorBoard and CSV (`logger=`).

Layers and tasks never log; the trainer hands one flat dict per logging step to `RunLogger.log`, which appends it to
`metrics.jsonl` and passes it to the dashboards the config selects (LoggerSpec; TensorBoard and CSV are
runtime.dashboards). W&B is offline by default (no account, no network needed; `wandb sync` uploads later, see SYNC_COMMAND), `online`
by one override, `disabled` in tests. Every key is plotted against `trainer/step`, so per-layer gradient-error
curves of different runs (quantizers) overlay on the same axis, and a resumed run may re-log steps it had
logged before it was killed.

One run folder is one W&B run, however often it is killed and resumed. What wandb 0.31 does (read in its source and
tried offline): every `wandb.init` in offline mode makes a new folder `wandb/offline-run-<time>-<id>` with
`resumed=False` and its own `_step` counting from 0, even with `id=..., resume="allow"`; `wandb sync` uploads the
folders of one id one after the other, in order of start time, as one run. So:
- the id is chosen before `wandb.init` and stored in `<run_dir>/wandb_run.json`, so a run killed before its first
  checkpoint (whose checkpoint would otherwise carry the id) continues the same W&B run instead of leaving an orphan;
- W&B's own step is given explicitly and only ever grows across restarts: `trainer step + step_offset`, where the
  offset (also in wandb_run.json) makes a restarted process start past every step the killed one used. A killed
  run's steps past its checkpoint stay in W&B (it cannot delete history), so a chart over `trainer/step` draws that
  stretch twice, with the same values on CPU.
"""
import json
import logging
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import atomic
from runtime.dashboards import CSV_NAME, TensorBoardSink, TensorBoardSpec, write_csv

STEP_KEY = "trainer/step"
MODES = ("offline", "online", "disabled")
STATE_NAME = "wandb_run.json"
# Uploads every offline W&B run under results/: the per-run folders (results/<name>/<run_id>/wandb/) and the
# sweep-summary runs (results/<name>/wandb/), in one `wandb sync` call, in bash or zsh, also when one kind is absent
# (`wandb sync` rejects a glob that matched nothing, so `results/*{,/*}/wandb/offline-run-*` is not enough).
SYNC_COMMAND = "find results -path '*/wandb/offline-run-*' -prune -print0 | xargs -0r wandb sync"

log = logging.getLogger(__name__)


def new_wandb_id() -> str:
    """8 base-36 characters, like wandb's own ids."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


@dataclass(frozen=True, kw_only=True)
class WandbSpec:
    mode: str = "offline"
    project: str = "lowbit-training"
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"logger.wandb.mode={self.mode!r} is invalid: use one of {', '.join(MODES)}")


@dataclass(frozen=True, kw_only=True)
class LoggerSpec:
    """The dashboards of a run (configs/logger): None / False where one is not selected. metrics.jsonl is always on."""
    wandb: WandbSpec | None = None
    tensorboard: TensorBoardSpec | None = None
    csv: bool = False


@dataclass
class RunLogger:
    run_dir: Path
    spec: LoggerSpec
    run_name: str
    config: dict[str, Any]
    wandb_id: str | None = None  # an id from a checkpoint; otherwise the one in wandb_run.json, otherwise a new one
    resume_step: int = -1  # lines logged after this step (by a killed run) are dropped
    _wandb: Any = field(default=None, init=False)
    _step_offset: int = field(default=0, init=False)  # W&B step = trainer step + this
    _tensorboard: TensorBoardSink | None = field(default=None, init=False)

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        last_logged = self._truncate_after(self.resume_step)
        self._file = self.metrics_path.open("a")
        if self.spec.wandb is not None and self.spec.wandb.mode != "disabled":
            self._continue_wandb_state(last_logged)
            self._start_wandb()
        if self.spec.tensorboard is not None:
            self._tensorboard = TensorBoardSink(self.run_dir, self.spec.tensorboard, self.resume_step)

    def _truncate_after(self, step: int) -> int | None:
        """Drop the lines a killed run logged past its last checkpoint (they will be logged again).

        Returns the largest step any line had, dropped ones included (None without lines). A line cut short by the
        kill is dropped too.
        """
        if not self.metrics_path.exists():
            return None
        lines, kept, last = self.metrics_path.read_text().splitlines(), [], None
        for line in lines:
            try:
                row_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                continue
            last = row_step if last is None else max(last, row_step)
            if row_step <= step:
                kept.append(line)
        if kept != lines:
            atomic.write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        return last

    def _continue_wandb_state(self, last_logged: int | None) -> None:
        """Pick the W&B id and step offset of this process and store them before `wandb.init` (see module docstring)."""
        path = self.run_dir / STATE_NAME
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
            old_offset, old_first = int(state.get("step_offset", 0)), int(state.get("first_step", 0))
        except (OSError, ValueError, TypeError, AttributeError) as err:
            log.warning(f"cannot read {path} ({type(err).__name__}); starting a new W&B run for {self.run_dir}")
            state, old_offset, old_first = {}, 0, 0
        self.wandb_id = self.wandb_id or state.get("id") or new_wandb_id()
        # Every W&B step used so far is <= used; this process starts above it.
        used = max(old_first - 1, -1 if last_logged is None else last_logged + old_offset)
        first_step = used + 1
        self._step_offset = max(old_offset, first_step - (self.resume_step + 1))
        atomic.write_json(path, {"id": self.wandb_id, "step_offset": self._step_offset, "first_step": first_step})

    def _start_wandb(self) -> None:
        import wandb  # imported here: tests and `disabled` runs never pay for it

        spec = self.spec.wandb
        self._wandb = wandb.init(
            project=spec.project, entity=spec.entity, group=spec.group, job_type=spec.job_type,
            tags=list(spec.tags), name=self.run_name, config=self.config, dir=str(self.run_dir),
            mode=spec.mode, id=self.wandb_id, resume="allow",
        )
        self._wandb.define_metric(STEP_KEY)
        self._wandb.define_metric("*", step_metric=STEP_KEY)

    def log(self, metrics: dict[str, float], *, step: int, epoch: int) -> None:
        row = {"step": step, "epoch": epoch, **metrics}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({STEP_KEY: step, **metrics}, step=step + self._step_offset)
        if self._tensorboard is not None:
            self._tensorboard.log(metrics, step)

    def summary(self, summary: dict[str, Any]) -> None:
        if self._wandb is not None:
            for key, value in summary.get("final", {}).items():
                self._wandb.summary[key] = value
            for key, value in summary.get("best", {}).items():
                self._wandb.summary[f"best/{key}"] = value
        if self._tensorboard is not None:
            self._tensorboard.summary(summary)

    def finish(self, exit_code: int = 0) -> None:
        """Close the JSONL file, write metrics.csv (logger=csv), close the TensorBoard writer and the W&B run, and
        return only once the W&B run's file is complete on disk.

        `run.finish()` alone returns before wandb's service has written the run's last records (tried offline: in
        3 of 25 runs the `.wandb` file had no history and no exit record yet), so a process killed right after, or
        anything that reads or syncs the folder at once, saw a truncated run. `wandb.teardown()` waits for the
        service to flush and stop; the next `wandb.init` in this process starts a new one (about a second).
        """
        self._file.close()
        if self.spec.csv:
            write_csv(self.metrics_path, self.run_dir / CSV_NAME)
        if self._tensorboard is not None:
            self._tensorboard.finish()
            self._tensorboard = None
        if self._wandb is not None:
            import wandb

            self._wandb.finish(exit_code=exit_code)
            self._wandb = None
            wandb.teardown()


class NullLogger:
    """The logger of ranks > 0 under DDP: rank 0 alone writes metrics.jsonl and the dashboards."""

    wandb_id = None

    def log(self, metrics: dict[str, float], *, step: int, epoch: int) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass
