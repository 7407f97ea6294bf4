"""One supervisor for party processes: how long the others get after a failure, and how every
process is stopped so that none outlives its run.

Both launchers use it: :mod:`covault.launch.processes` (``covault.run``: ``multiprocessing``
children that report over pipes) and :mod:`covault.launch.consortium` (``covault run``:
``covault party`` subprocesses judged by exit code). A launcher wraps each process in a :class:`Child` and asks two things:

- :class:`FailureClock`: after the first failure the others get ``grace`` s to stop (a failing
  party tells its peers at once, and they abort within a second), or only ``short`` s once the
  launcher knows the rest are stalled or stopping anyway (every silent party is blamed by a
  reported error, or one party is left running alone).
- :func:`stop`: terminate the children that will never report, give the others ``patience`` s
  to exit, then terminate what still runs, and kill what ignores that for ``kill_grace`` s.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from multiprocessing.process import BaseProcess

FAILURE_GRACE = 3.0  # after the first failure, how long the other parties get to stop
SHORT_GRACE = 1.5  # ... once the rest are known to be stalled or stopping (abort takes <= 1 s)
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL


class Child:
    """A party process under supervision: a ``multiprocessing`` process or a ``subprocess``."""

    def __init__(self, name: str, process: BaseProcess | subprocess.Popen):
        self.name = name
        self.process = process

    @property
    def started(self) -> bool:
        return not isinstance(self.process, BaseProcess) or self.process.pid is not None

    def alive(self) -> bool:
        if isinstance(self.process, BaseProcess):
            return self.process.is_alive()
        return self.process.poll() is None

    @property
    def exitcode(self) -> int | None:
        if isinstance(self.process, BaseProcess):
            return self.process.exitcode
        return self.process.poll()

    def terminate(self) -> None:
        """SIGTERM (a party exits cleanly on it, closing its connections)."""
        with contextlib.suppress(ProcessLookupError):
            if isinstance(self.process, BaseProcess):
                self.process.terminate()
            else:
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` s (None: for ever) for the process to exit; True if it has."""
        if isinstance(self.process, BaseProcess):
            self.process.join(timeout)
            return not self.process.is_alive()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


class FailureClock:
    """The deadline for the parties still running once one has failed."""

    def __init__(self, grace: float = FAILURE_GRACE, short: float = SHORT_GRACE):
        self.grace, self.short = grace, short
        self.deadline: float | None = None
        self._shortened = False

    def failed(self, *, rest_stalled: bool = False) -> None:
        """Record a failure; ``rest_stalled``: the parties still running are known to be stalled
        or stopping (blamed by a reported error, or one left alone)."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.grace
        if rest_stalled and not self._shortened:
            self._shortened = True
            self.deadline = min(self.deadline, now + self.short)

    def left(self) -> float | None:
        """Seconds until the deadline (None before any failure, at most 0 after it)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def stop(
    children: Iterable[Child],
    *,
    done: Iterable[str] = (),
    patience: float = 0.0,
    kill_grace: float = KILL_GRACE,
) -> list[str]:
    """Make sure no child outlives the run; returns the children stopped while still running
    without being ``done`` (they never reported: stalled, or the run was interrupted).

    Children not ``done`` are terminated at once (which also ends their peers' wait for them);
    the ``done`` ones get up to ``patience`` s to exit on their own; then whatever still runs is
    terminated, and killed after ``kill_grace`` s.
    """
    started = [c for c in children if c.started]
    finished = set(done)
    stopped: list[str] = []
    try:
        for c in started:
            if c.name not in finished and c.alive():
                c.terminate()
                stopped.append(c.name)
        deadline = time.monotonic() + patience
        for c in started:
            if c.name in finished:
                c.wait(max(0.0, deadline - time.monotonic()))
    finally:
        _terminate_then_kill(started, kill_grace)
    return stopped


def _terminate_then_kill(children: Sequence[Child], kill_grace: float) -> None:
    alive = [c for c in children if c.alive()]
    for c in alive:
        c.terminate()
    deadline = time.monotonic() + kill_grace
    for c in alive:
        if not c.wait(max(0.0, deadline - time.monotonic())):
            c.kill()
    for c in children:
        c.wait(None)
