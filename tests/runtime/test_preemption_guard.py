"""The preemption guard: a signal only raises a flag; after the checkpoint the earlier handler (submitit's requeue)
gets the signal, or the process exits with 128 + signal; the timer fires every checkpoint_every_min."""
import os
import signal
import time

import pytest

from runtime.preemption import Preempted, PreemptionGuard


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
