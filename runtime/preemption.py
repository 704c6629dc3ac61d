"""When to checkpoint inside an epoch: every `checkpoint_every_min` minutes, and at once when the cluster warns.

SLURM sends a signal before it kills a job at its time limit or for preemption (SIGUSR2 under submitit, which
asks for it with `--signal=USR2@<signal_delay_s>`; SIGUSR1 or SIGTERM with other setups). The handler only
raises a flag; the trainer polls it at the next step boundary, saves a checkpoint holding the position inside
the epoch, and then hands over to whatever handler was there before (submitit's requeues the job; otherwise the
process exits with 128 + signal). A requeued or re-run job resumes from that step.

A step boundary may not come in time: the first steps of a compiled run compile for minutes, an evaluation has
no step boundary at all. So a watchdog thread stops the run anyway when no step boundary came within GRACE_S of
the signal (or of the last boundary): it sends the signal again, and a second signal, the watchdog's or the
cluster's, hands over at once without a checkpoint; the run resumes from its last one. Files are written
atomically (runtime/atomic.py), so stopping mid-write leaves the old file.

Under several ranks the decision must be the same on every rank (they all save RNG state, and they must stop at
the same step), so the flags are OR-ed over ranks every `sync_every` steps on a CPU group: no GPU sync.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from runtime.distributed import Dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

#: Seconds a signalled run may go without a step boundary before the watchdog stops it. SIGTERM is usually the
#: kill itself, with SIGKILL 10 s (docker stop, the launcher of issue 27) to 30 s (SLURM's KillWait, Kubernetes)
#: later: 5 s leaves time to unwind. SIGUSR1/SIGUSR2 are warnings sent a set lead before the limit (120 s here:
#: hydra.launcher.signal_delay_s), so an evaluation or a slow step may run on for a minute to reach its checkpoint.
GRACE_S = {signal.SIGTERM: 5.0, signal.SIGUSR1: 60.0, signal.SIGUSR2: 60.0}
#: Seconds the main thread gets to unwind after the stop is raised in it, before os._exit(128 + signal): it may be
#: stuck in one C call, or the exception may be swallowed (raised inside a weakref callback or a __del__, Python
#: prints "Exception ignored" and goes on; seen inside dynamo). Nothing more is cleaned up then, but atomic writes
#: keep the old files and the run folder's lock is the kernel's.
HARD_EXIT_S = 3.0


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
    _last_boundary: float = field(default_factory=time.monotonic, init=False)  # the watchdog's heartbeat
    _watching: bool = field(default=False, init=False)  # a signal arrived here and the watchdog runs
    _stand_down: threading.Event = field(default_factory=threading.Event, init=False)

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
        self._stand_down.set()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame) -> None:
        if not self._watching:  # the first signal: checkpoint at the next step boundary, if one comes in time
            self.signum, self._watching = signum, True
            self._last_boundary = time.monotonic()
            threading.Thread(target=self._watch, args=(signum,), name="preemption-watchdog", daemon=True).start()
            return
        # a second signal (the cluster's, or the watchdog's when no step boundary came in time): stop now
        threading.Thread(target=self._hard_exit, args=(signum,), name="preemption-exit", daemon=True).start()
        self._hand_over(signum, f"stopped by signal {signal.Signals(signum).name} before a checkpoint (a second "
                                f"signal, or no step boundary within {GRACE_S[signum]:g} s of the first)")

    def _watch(self, signum: int) -> None:
        """Signal the main thread again when no step boundary came within GRACE_S (its handler raises the stop)."""
        while not self._stand_down.wait(max(0.0, self._last_boundary + GRACE_S[signum] - time.monotonic())):
            if time.monotonic() >= self._last_boundary + GRACE_S[signum]:
                break
        else:
            return  # the trainer is checkpointing, or the guard was left
        signal.pthread_kill(threading.main_thread().ident, signum)  # interrupts a sleep or a wait, too
        self._hard_exit(signum)  # also when the main thread never runs the handler

    @staticmethod
    def _hard_exit(signum: int) -> None:
        """The process ends HARD_EXIT_S after the stop was raised, whether or not the main thread got there."""
        time.sleep(HARD_EXIT_S)
        print(f"signal {signal.Signals(signum).name}: still running {HARD_EXIT_S:g} s after the stop; exiting "
              f"without cleanup", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    def due(self, step: int) -> bool:
        """True when the trainer should checkpoint now (after `step` steps); the same answer on every rank."""
        self._last_boundary = time.monotonic()  # the trainer steps on: the watchdog waits for the agreement
        if self.dist.enabled and step % self.sync_every:
            return False
        timer = bool(self.every_min) and time.monotonic() - self._last_save >= 60 * self.every_min
        signalled, timer = self.dist.any([self.signum is not None, timer and self.dist.is_main])
        if signalled and self.signum is None:  # another rank got the signal first: stop together
            self.signum = signal.SIGTERM
        if signalled:
            self._stand_down.set()  # the checkpoint comes now; a second signal still stops at once
        return signalled or timer

    def saved(self) -> None:
        self._last_save = time.monotonic()

    def stop_if_signalled(self) -> None:
        """After the checkpoint: pass the signal to the earlier handler (submitit requeues), else exit."""
        if self.signum is not None:
            self._hand_over(self.signum, f"stopped by signal {signal.Signals(self.signum).name} after a checkpoint")

    def _hand_over(self, signum: int, why: str) -> None:
        previous = self._previous.get(signum)
        self.__exit__()
        if callable(previous):
            previous(signum, None)  # submitit: requeue and exit on rank 0; returns on the other ranks
        print(f"{why}; run the same command to resume", file=sys.stderr, flush=True)
        raise Preempted(128 + signum)
