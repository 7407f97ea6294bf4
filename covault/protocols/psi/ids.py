"""Canonical form of PSI ids: ``int`` (Python or numpy) -> decimal string, ``str`` -> as is.

The canonical string is what is hashed (UTF-8) and what the result lists, so ``42``,
``np.int64(42)`` and ``"42"`` are the same id, while ``"042"`` is another one. ``bool``,
floats, ``None``, bytes and anything else are refused (a float id such as ``1042.0`` usually
means a column was parsed wrongly; converting it silently could match the wrong records).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IdProblem:
    """Why a party's ids cannot be used. ``private`` may show an id (only for the owner)."""

    code: int  # 1 empty, 2 duplicates, 3 unsupported id
    count: int
    private: str


EMPTY, DUPLICATES, UNSUPPORTED = 1, 2, 3


def _describe(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__} of {value.bit_length()} bits>"  # type: ignore[attr-defined]
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(pos: int, value: object, why: str = "") -> IdProblem:
    if not why:
        why = ("is None" if value is None else f"is a {type(value).__name__}") + "; ids must be str or int"
    return IdProblem(UNSUPPORTED, 1, f"id at position {pos} ({_describe(value)}) {why}")


def _from_array(arr: np.ndarray) -> list[str] | IdProblem:
    if arr.ndim != 1:
        return IdProblem(UNSUPPORTED, 1, f"ids must be one-dimensional, got an array of shape {arr.shape}")
    kind = arr.dtype.kind
    if kind in "iu":
        return [str(v) for v in arr.tolist()]
    if kind == "U":
        return _from_iterable(arr.tolist())
    if kind == "O":
        return _from_iterable(arr)
    if len(arr) == 0:
        return []
    return _bad(0, arr[0], f"is of dtype {arr.dtype}; ids must be str or int")


def _from_iterable(values: Iterable) -> list[str] | IdProblem:
    out: list[str] = []
    append = out.append
    for pos, v in enumerate(values):
        t = type(v)
        if t is str or (t is not int and isinstance(v, str)):
            s = v if t is str else str.__str__(v)
            if not s.isascii():
                try:
                    s.encode()
                except UnicodeEncodeError:
                    return _bad(pos, v, "is not valid Unicode text (cannot be UTF-8 encoded)")
            append(s)
        elif t is int or (isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)):
            try:
                append(str(int(v)))
            except ValueError:  # more digits than Python converts to text
                return _bad(pos, v, "has too many digits")
        else:
            return _bad(pos, v)
    return out


def canonical_ids(ids: object) -> list[str] | IdProblem:
    """Canonical strings of ``ids`` in input order, or the problem (empty, duplicates, bad id)."""
    if isinstance(ids, str | bytes | bytearray) or ids is None:
        out: list[str] | IdProblem = IdProblem(
            UNSUPPORTED, 1, f"ids must be a sequence of ids, not a single {type(ids).__name__}"
        )
    elif isinstance(ids, np.ndarray):
        out = _from_array(ids)
    elif hasattr(ids, "to_numpy"):  # pandas Series / Index
        out = _from_array(np.asarray(ids.to_numpy()))
    else:
        try:
            out = _from_iterable(iter(ids))  # type: ignore[call-overload]
        except TypeError:
            out = IdProblem(UNSUPPORTED, 1, f"ids must be a sequence of str or int, got {type(ids).__name__}")
    if isinstance(out, IdProblem):
        return out
    if not out:
        return IdProblem(EMPTY, 0, "no ids")
    unique = set(out)
    if len(unique) != len(out):
        seen: set[str] = set()
        for pos, s in enumerate(out):
            if s in seen:
                n = len(out) - len(unique)
                return IdProblem(DUPLICATES, n, f"{n} duplicate ids (first: {s!r} at position {pos})")
            seen.add(s)
    return out
