"""The preemption guard: a signal only raises a flag; after the checkpoint the earlier handler (submitit's requeue)
gets the signal, or the process exits with 128 + signal; the timer fires every checkpoint_every_min; without a step
boundary (a long compile) the process stops GRACE_S after the signal, at once after a second one."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.preemption import GRACE_S, Preempted, PreemptionGuard


def test_signal_is_handed_to_the_earlier_handler_after_the_checkpoint():
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))  # stands in for submitit
    try:
        with PreemptionGuard(every_min=None) as guard:
            assert not guard.due(step=1)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert calls == []  # the guard only raised its flag: the step in flight finishes first
            assert guard.due(step=2)
            with pytest.raises(Preempted) as stopped:
                guard.stop_if_signalled()
        assert calls == [signal.SIGUSR2] and stopped.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_without_a_signal_nothing_stops_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard(every_min=None) as guard:
        assert signal.getsignal(signal.SIGTERM) != before
        assert not guard.due(step=1)
        guard.stop_if_signalled()  # no signal: returns
    assert signal.getsignal(signal.SIGTERM) == before


def test_timer_fires_after_the_interval_and_restarts_when_saved():
    with PreemptionGuard(every_min=0.001) as guard:  # 60 ms
        assert not guard.due(step=1)
        time.sleep(0.08)
        assert guard.due(step=2)
        guard.saved()
        assert not guard.due(step=3)


# A process that installs the guard, then runs no step boundary for two minutes (a compile, an evaluation).
_NO_STEP_BOUNDARY = """
import contextlib, sys, time
from runtime.preemption import PreemptionGuard
with PreemptionGuard(every_min=None):
    print("ready", flush=True)
    until = time.monotonic() + 120
    while time.monotonic() < until:
        {work}
sys.exit(3)
"""
ROOT = Path(__file__).resolve().parents[2]


def _start(script: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=30)
    return proc


@pytest.mark.parametrize("work", [
    "sum(range(10_000))", "time.sleep(1)",
    "with contextlib.suppress(BaseException): time.sleep(1)",  # like a weakref callback: the raised stop is lost
], ids=["busy", "sleeping", "swallowing"])
def test_sigterm_without_a_step_boundary_exits_after_the_grace_period(work):
    proc = _start(_NO_STEP_BOUNDARY.format(work=work))
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert GRACE_S[signal.SIGTERM] - 0.5 <= took < 15, took  # it waited for a step boundary, then stopped
    assert "before a checkpoint" in stderr


def test_a_second_sigterm_exits_at_once():
    proc = _start(_NO_STEP_BOUNDARY.format(work="sum(range(10_000))"))
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert time.monotonic() - sent < 2


def test_step_boundaries_keep_the_watchdog_waiting_for_the_ranks_agreement():
    """Under several ranks the flag is read every sync_every steps: steps that keep coming are not stopped."""
    script = """
import signal, sys, time
from runtime import preemption
from runtime.distributed import Dist

class TwoRanks(Dist):  # the agreement without a process group: this rank's flags
    def any(self, flags):
        return flags

preemption.GRACE_S[signal.SIGTERM] = 1.0
with preemption.PreemptionGuard(every_min=None, dist=TwoRanks(world=2), sync_every=20) as guard:
    print("ready", flush=True)
    for step in range(1, 1000):
        time.sleep(0.2)  # 20 steps: 4 s, 4x the grace period
        if guard.due(step):
            print(f"checkpoint at step {step}", flush=True)
            guard.stop_if_signalled()
sys.exit(3)
"""
    proc = _start(script)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stdout == "checkpoint at step 20\n" and "after a checkpoint" in stderr
