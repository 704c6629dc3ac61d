"""The one place metrics leave the trainer: a local JSONL file and Weights & Biases.

Layers and tasks never log; the trainer hands one flat dict per logging step to `RunLogger.log`.
W&B is offline by default (no account, no network needed; `wandb sync` uploads later), `online` by one
override, `disabled` in tests. Every key is plotted against `trainer/step`, so per-layer gradient-error
curves of different runs (quantizers) overlay on the same axis, and a resumed run may re-log steps it had
logged before it was killed.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import atomic

STEP_KEY = "trainer/step"
MODES = ("offline", "online", "disabled")


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
            raise ValueError(f"logger.mode={self.mode!r} is invalid: use one of {', '.join(MODES)}")


@dataclass
class RunLogger:
    run_dir: Path
    wandb_spec: WandbSpec
    run_name: str
    config: dict[str, Any]
    wandb_id: str | None = None  # set when resuming, so the same W&B run continues
    resume_step: int = -1  # lines logged after this step (by a killed run) are dropped
    _wandb: Any = field(default=None, init=False)

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._truncate_after(self.resume_step)
        self._file = self.metrics_path.open("a")
        if self.wandb_spec.mode != "disabled":
            self._start_wandb()

    def _truncate_after(self, step: int) -> None:
        """A killed run may have logged steps past its last checkpoint; they will be logged again."""
        if not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        atomic.write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def _start_wandb(self) -> None:
        import wandb  # imported here: tests and `disabled` runs never pay for it

        spec = self.wandb_spec
        self._wandb = wandb.init(
            project=spec.project, entity=spec.entity, group=spec.group, job_type=spec.job_type,
            tags=list(spec.tags), name=self.run_name, config=self.config, dir=str(self.run_dir),
            mode=spec.mode, id=self.wandb_id, resume="allow" if self.wandb_id else None,
        )
        self.wandb_id = self._wandb.id
        self._wandb.define_metric(STEP_KEY)
        self._wandb.define_metric("*", step_metric=STEP_KEY)

    def log(self, metrics: dict[str, float], *, step: int, epoch: int) -> None:
        row = {"step": step, "epoch": epoch, **metrics}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({STEP_KEY: step, **metrics})

    def summary(self, summary: dict[str, Any]) -> None:
        if self._wandb is not None:
            for key, value in summary.get("final", {}).items():
                self._wandb.summary[key] = value
            for key, value in summary.get("best", {}).items():
                self._wandb.summary[f"best/{key}"] = value

    def finish(self, exit_code: int = 0) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish(exit_code=exit_code)
            self._wandb = None
