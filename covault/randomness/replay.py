"""The dealer's side of a program, recorded once and replayed.

A 2pc dealer holds no data: what it deals for a program is a function of public shapes alone
(the compute parties' inputs never reach it). A service that runs the same program on every
single-row query (:class:`covault.serving.online.Query` with its pool) can therefore record
the dealer's calls into its correlation provider once and, for later queries, make the same
calls in the same order without walking the program again: the same draws from the same
streams, the same messages. A recording is kept only where that is sure to hold
(:attr:`Recorder.replayable`): every draw from the dealer's streams came from a recorded call,
and every argument is plain data (shapes, dtypes, numbers, tuples of them) or a function whose
captured values are such data (``np.multiply``, ``ring.matmul``, an FSS gate's ``make``), never
one that could hold state (an array, an object).
"""

from __future__ import annotations

import dis
import functools
import types
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from covault.randomness.prg import PRG

#: provider methods whose dealer side does all its work when called (no deferred function)
REPLAYABLE = frozenset(
    {"beaver", "beaver_late", "and_triple", "mask_products", "trunc_mask", "dabit", "dabit_beaver", "dcf"}
)

Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def drawn(streams: Mapping[str, PRG]) -> int:
    """Keystream bytes drawn so far from all of ``streams``."""
    return sum(g.drawn for g in streams.values())


def _plain(arg: Any, depth: int = 0) -> bool:
    if isinstance(arg, bool | int | float | str | np.integer | np.floating | np.dtype | np.ufunc):
        return True
    if arg is None or (isinstance(arg, type) and issubclass(arg, np.generic)):  # np.uint8 ...
        return True
    if depth > 4:
        return False
    if isinstance(arg, tuple):
        return all(_plain(a, depth + 1) for a in arg)
    if isinstance(arg, types.FunctionType):  # a pure function of its inputs and plain values
        if arg.__defaults__ or arg.__kwdefaults__ or not _reads_only(arg.__code__):
            return False
        try:
            return all(_plain(c.cell_contents, depth + 1) for c in arg.__closure__ or ())
        except ValueError:  # an empty cell: a variable not assigned yet
            return False
    return False


_WRITES = frozenset({"STORE_DEREF", "DELETE_DEREF", "STORE_GLOBAL", "DELETE_GLOBAL"})


@functools.lru_cache(maxsize=256)
def _reads_only(code: types.CodeType) -> bool:
    """Whether ``code`` (and the functions defined in it) assigns no captured or global
    variable: what it computes depends on its inputs and the values it reads alone."""
    return not any(i.opname in _WRITES for i in dis.get_instructions(code)) and all(
        _reads_only(c) for c in code.co_consts if isinstance(c, types.CodeType)
    )


class Recorder:
    """Stands in for the dealer's provider (``provider``, whose PRG streams are ``streams``)
    while a program runs: every method call goes through to it and is recorded."""

    def __init__(self, provider: Any, streams: Mapping[str, PRG]):
        self._provider, self._streams = provider, streams
        self.calls: list[Call] = []
        self.plain = True  # every call replayable, with plain arguments
        self.inside = 0  # bytes drawn inside the calls
        self._start = drawn(streams)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._provider, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if name not in REPLAYABLE or not all(map(_plain, (*args, *kwargs.values()))):
                self.plain = False
            before = drawn(self._streams)
            out = attr(*args, **kwargs)
            self.inside += drawn(self._streams) - before
            self.calls.append((name, args, kwargs))
            return out

        return call

    @property
    def replayable(self) -> bool:
        """Whether :func:`replay` of :attr:`calls` does all the recorded run did: every call
        replayable with plain arguments, and no draw from the streams outside them."""
        return self.plain and self.inside == drawn(self._streams) - self._start


def replay(provider: Any, calls: Sequence[Call]) -> None:
    """Make the recorded ``calls`` again, in order (the dealer: their draws and messages)."""
    for name, args, kwargs in calls:
        getattr(provider, name)(*args, **kwargs)
