"""Leak checks on recorded transcripts (covault.transport.transcript): no array a party sends
holds, anywhere in its raw bytes, a secret value as float64 or as int64 fixed point (16 or 32
fractional bits), nor, in arrays of words narrowed to 4 bytes or fewer, the low 4 bytes of its
16-bit fixed point; no secret-carrying array is sent twice to the same party; the 64-bit words a
compute party receives from its peers and the clients pass a bit-frequency test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from covault.transport.transcript import read_transcript
from tests.helpers import bit_balance_z

FRACS = (16, 32)
PUBLIC = 2**16  # 8-byte integer arrays whose every |value| is below this are sizes and flags
MAX_Z = 5.0  # largest |z| of a bit position over uniform words: 64 positions fail by chance ~4e-5


def leak_patterns(values) -> tuple[set[bytes], set[bytes]]:
    """(8-byte, 4-byte) little-endian patterns of ``values``: float64 and int64 fixed point at
    16 and 32 fractional bits; the low 4 bytes of the 16-bit fixed point (sent narrowed)."""
    v = np.asarray(values, np.float64).ravel()
    if not np.all(v):
        raise ValueError("leak_patterns: a zero value matches every zero word; use nonzero values")
    words = [np.round(v * 2.0**f).astype("<i8").tobytes() for f in FRACS]
    wide = {raw[i : i + 8] for raw in (*words, v.astype("<f8").tobytes()) for i in range(0, len(raw), 8)}
    narrow = {words[0][i : i + 4] for i in range(0, len(words[0]), 8)}
    return wide, narrow


def messages(directory: Path) -> list[tuple[str, dict]]:
    """(sender, message) for every message recorded in ``directory``'s transcripts."""
    out = []
    for path in sorted(Path(directory).glob("*.transcript")):
        header, msgs = read_transcript(path)
        out += [(header["party"], m) for m in msgs]
    return out


def find_leaks(sent: list[tuple[str, dict]], values, receivers=None) -> tuple[list[str], int]:
    """(each message to one of ``receivers`` (default: all) holding a pattern of ``values``,
    the number of bytes scanned)."""
    wide, narrow = leak_patterns(values)
    leaks, scanned = [], 0
    for sender, m in sent:
        if receivers is not None and m["to"] not in receivers:
            continue
        for k, a in enumerate(m["arrays"]):
            raw = np.ascontiguousarray(a).tobytes()
            scanned += len(raw)
            patterns = wide | narrow if a.dtype.itemsize <= 4 else wide
            if any(p in raw for p in patterns):
                leaks.append(f"{sender} -> {m['to']} message {m['seq']} array {k} ({a.dtype}, {a.shape})")
    return leaks, scanned


def _public(a: np.ndarray) -> bool:
    return a.dtype.kind in "iu" and a.dtype.itemsize == 8 and bool(np.all(np.abs(a.view(np.int64)) < PUBLIC))


def repeated(sent: list[tuple[str, dict]]) -> list[str]:
    """Arrays of at least 8 bytes, not public sizes or flags, that one party sends to the same
    party in two messages (a fresh mask or share makes each differ)."""
    first: dict[tuple[str, str, bytes], int] = {}
    out = []
    for sender, m in sent:
        for a in m["arrays"]:
            if a.nbytes < 8 or _public(a):
                continue
            key = (sender, m["to"], a.tobytes())
            if key in first and first[key] != m["seq"]:
                out.append(
                    f"{sender} -> {m['to']}: messages {first[key]} and {m['seq']} ({a.dtype}, {a.shape})"
                )
            first.setdefault(key, m["seq"])
    return out


def received_words(sent: list[tuple[str, dict]], party: str, senders) -> np.ndarray:
    """Every int64 word ``party`` receives from ``senders``."""
    words = [
        a.ravel().view(np.uint64)
        for sender, m in sent
        if m["to"] == party and sender in senders
        for a in m["arrays"]
        if a.dtype == np.int64 and a.size
    ]
    return np.concatenate(words) if words else np.zeros(0, np.uint64)


def check_transcripts(directory: Path, values, compute, others, receivers=None) -> int:
    """Fail if any message to ``receivers`` (default: all) holds a pattern of ``values``, if a
    party sends a secret-carrying array twice to the same party, or if the int64 words a party of
    ``compute`` receives from ``compute`` and ``others`` (clients) fail the bit-frequency test;
    return the number of bytes scanned."""
    sent = messages(directory)
    leaks, scanned = find_leaks(sent, values, receivers)
    assert not leaks, f"query or answer words in {directory}: {leaks[:5]}"
    again = repeated(sent)
    assert not again, f"arrays sent twice: {again[:5]}"
    for p in compute:
        words = received_words(sent, p, [*compute, *others])
        assert len(words) >= 64, f"{p}: only {len(words)} words received"
        z = bit_balance_z(words)
        assert z < MAX_Z, f"{p}: the words it receives are not uniform (bit |z| {z:.1f} >= {MAX_Z})"
    return scanned
