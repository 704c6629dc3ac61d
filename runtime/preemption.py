"""When to checkpoint inside an epoch: every `checkpoint_every_min` minutes, and at once when the cluster warns.

SLURM sends a signal before it kills a job at its time limit or for preemption (SIGUSR2 under submitit, which
asks for it with `--signal=USR2@<signal_delay_s>`; SIGUSR1 or SIGTERM with other setups). The handler only
raises a flag; the trainer polls it at the next step boundary, saves a checkpoint holding the position inside
the epoch, and then hands over to whatever handler was there before (submitit's requeues the job; otherwise the
process exits with 128 + signal). A requeued or re-run job resumes from that step.

Under several ranks the decision must be the same on every rank (they all save RNG state, and they must stop at
the same step), so the flags are OR-ed over ranks every `sync_every` steps on a CPU group: no GPU sync.
"""
from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from runtime.distributed import Dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(SystemExit):
    """Raised after the preemption checkpoint when no earlier handler takes over; exit code 128 + signal."""


@dataclass
class PreemptionGuard:
    every_min: float | None  # None or 0: only epoch-end and signal checkpoints
    dist: Dist = field(default_factory=Dist)
    sync_every: int = 1  # steps between flag agreements across ranks (1 on a single process: a bool read)
    signum: int | None = field(default=None, init=False)
    _previous: dict[int, Any] = field(default_factory=dict, init=False)
    _last_save: float = field(default_factory=time.monotonic, init=False)

    def __post_init__(self) -> None:
        if self.every_min is not None and (isinstance(self.every_min, bool) or self.every_min < 0):
            raise ValueError(f"checkpoint_every_min={self.every_min} is invalid: use minutes > 0, or null/0 for "
                             f"epoch ends only")

    def __enter__(self) -> "PreemptionGuard":
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (e.g. a launcher running jobs in threads): no handlers
                break
        self._last_save = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame) -> None:
        self.signum = signum

    def due(self, step: int) -> bool:
        """True when the trainer should checkpoint now (after `step` steps); the same answer on every rank."""
        if self.dist.enabled and step % self.sync_every:
            return False
        timer = bool(self.every_min) and time.monotonic() - self._last_save >= 60 * self.every_min
        signalled, timer = self.dist.any([self.signum is not None, timer and self.dist.is_main])
        if signalled and self.signum is None:  # another rank got the signal first: stop together
            self.signum = signal.SIGTERM
        return signalled or timer

    def saved(self) -> None:
        self._last_save = time.monotonic()

    def stop_if_signalled(self) -> None:
        """After the checkpoint: pass the signal to the earlier handler (submitit requeues), else exit."""
        if self.signum is None:
            return
        signum, previous = self.signum, self._previous.get(self.signum)
        self.__exit__()
        if callable(previous):
            previous(signum, None)  # submitit: requeue and exit on rank 0; returns on the other ranks
        print(f"stopped by signal {signal.Signals(signum).name} after a checkpoint; run the same command to resume",
              file=sys.stderr)
        raise Preempted(128 + signum)
