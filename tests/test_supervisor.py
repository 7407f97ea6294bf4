"""The supervisor both launchers share: the grace after a failure, and stopping every process
(terminate, then kill) so that none outlives its run."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time

import pytest

from covault.launch.supervisor import Child, FailureClock, stop

pytestmark = pytest.mark.processes

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
POLITE = "import time; print('ready', flush=True); time.sleep(60)"
QUICK = "import time; time.sleep(0.3)"


def popen(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    if "ready" in code:
        assert proc.stdout.readline().strip() == "ready"  # its signal handler is in place
    return proc


def ignore_sigterm_and_sleep(ready) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(60)


def test_the_clock_starts_at_the_first_failure_and_only_shortens():
    clock = FailureClock(grace=3.0, short=0.2)
    assert clock.left() is None and not clock.expired()
    clock.failed()
    assert 2.5 < clock.left() <= 3.0
    clock.failed()  # a second failure does not extend the grace
    assert clock.left() <= 3.0
    clock.failed(rest_stalled=True)
    assert clock.left() <= 0.2
    time.sleep(0.25)
    assert clock.expired() and clock.left() == 0.0


def test_a_stalled_clock_never_waits_longer_than_the_grace():
    clock = FailureClock(grace=0.1, short=5.0)
    clock.failed(rest_stalled=True)
    assert clock.left() <= 0.1


def test_children_that_never_reported_are_stopped_and_named_the_others_exit_on_their_own():
    polite, quick = popen(POLITE), popen(QUICK)
    t0 = time.monotonic()
    stopped = stop([Child("stalled", polite), Child("done", quick)], done={"done"}, patience=5.0)
    assert stopped == ["stalled"]
    assert polite.returncode == -signal.SIGTERM
    assert quick.returncode == 0  # given time to finish: not terminated
    assert time.monotonic() - t0 < 3.0


def test_a_child_ignoring_sigterm_is_killed_after_the_kill_grace():
    stubborn = popen(STUBBORN)
    t0 = time.monotonic()
    assert stop([Child("stubborn", stubborn)], kill_grace=0.5) == ["stubborn"]
    assert stubborn.returncode == -signal.SIGKILL
    assert 0.4 < time.monotonic() - t0 < 5.0


def test_multiprocessing_children_too_and_unstarted_ones_are_skipped():
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    started = ctx.Process(target=ignore_sigterm_and_sleep, args=(ready,), daemon=True)
    started.start()
    assert ready.wait(30)
    never = ctx.Process(target=ignore_sigterm_and_sleep, args=(ready,), daemon=True)
    stopped = stop([Child("started", started), Child("never", never)], kill_grace=0.5)
    assert stopped == ["started"]
    assert not started.is_alive() and started.exitcode == -signal.SIGKILL
    assert never.pid is None
