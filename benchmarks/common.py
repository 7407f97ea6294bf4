"""Shared by the benchmarks: a network delay (a transport wrapper holding every message for a
one-way delay), a barrier, and writing a report."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from covault.transport.base import Message, Transport


class DelayedTransport(Transport):
    """``inner`` with every message handed over no earlier than ``one_way`` seconds after it was
    sent (a send-time stamp travels with it; parties share this machine's monotonic clock).
    Latency without a bandwidth cap: messages in flight overlap, as on a long fat link."""

    def __init__(self, inner: Transport, one_way: float) -> None:
        self.inner = inner
        self.party = inner.party
        self.peers = inner.peers
        self.one_way = float(one_way)

    def _stamp(self, sends: Mapping[str, Message]) -> dict[str, Message]:
        now = np.array([time.monotonic()], dtype=np.float64)
        return {to: [*msg, now] for to, msg in sends.items()}

    def _land(self, got: dict[str, Message]) -> dict[str, Message]:
        if got:
            due = max(float(m[-1][0]) for m in got.values()) + self.one_way
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        return {frm: m[:-1] for frm, m in got.items()}

    def send(self, to: str, message: Message) -> None:
        self.inner.send(to, self._stamp({to: message})[to])

    def recv(self, frm: str, timeout: float) -> Message:
        return self._land({frm: self.inner.recv(frm, timeout)})[frm]

    def exchange(
        self, sends: Mapping[str, Message], recv_from: Sequence[str], timeout: float
    ) -> dict[str, Message]:
        return self._land(self.inner.exchange(self._stamp(sends), recv_from, timeout))

    def close(self) -> None:
        self.inner.close()


def barrier(s, base: Transport) -> None:
    """Every party waits for every other (undelayed, on ``base``), so timed calls start together."""
    net = s.net
    net.transport = base
    others = [p for p in s.parties if p != s.party]
    net.exchange({p: [np.zeros(1)] for p in others}, others)


def emit(lines: list[str], out: Path | None) -> None:
    """Print the report's ``lines``, and write them to ``out`` too when given."""
    report = "".join(line + "\n" for line in lines)
    sys.stdout.write(report)
    if out is not None:
        out.write_text(report, encoding="utf-8")
