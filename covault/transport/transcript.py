"""Transcript audit: every message a party sends, recorded before encryption, one file per party.

``DIR/NAME.transcript`` is JSON lines. The first line describes the run::

    {"format": "covault-transcript/1", "party": "p0", "peers": ["p1", "p2"],
     "session": "<hex>", "protocol": "rep3"}

then one line per message sent, in sending order::

    {"seq": 0, "round": 3, "to": "p1",
     "arrays": [{"dtype": "<i8", "shape": [2, 3], "data": "<base64 of the raw C-order bytes>"}]}

``round`` is the number of communication rounds the sender had completed when it sent the
message (messages of one round share it; input-independent dealer material is sent between
rounds). What party Q received is every message with ``"to": Q`` in the other parties' files.
To read one without covault::

    import base64, json, numpy as np
    with open("DIR/p0.transcript") as f:
        header = json.loads(next(f))
        for line in f:
            m = json.loads(line)
            arrays = [np.frombuffer(base64.b64decode(a["data"]), np.dtype(a["dtype"])).reshape(a["shape"])
                      for a in m["arrays"]]

(:func:`read_transcript` does the same.) A transcript holds shares and masked values, but also
every value the program opens and the pairwise PRG seeds; keep it as confidential as the keys.
Files are created with mode 0600 (an existing one is made 0600 before anything is written), and
directories covault creates for them with mode 0700.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from covault.errors import CovaultError
from covault.transport.base import Message, Network

FORMAT = "covault-transcript/1"
ENV_VAR = "COVAULT_TRANSCRIPT_DIR"
SUFFIX = ".transcript"


def transcript_dir(explicit: str | os.PathLike | None) -> Path | None:
    """``explicit`` if given, else ``$COVAULT_TRANSCRIPT_DIR`` if set (and non-empty), else None."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else None


def _private_dir(d: Path) -> None:
    """Create ``d`` and any missing parent with mode 0700 (existing ones are left as they are)."""
    missing = []
    while not d.is_dir():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for m in reversed(missing):
        try:
            os.mkdir(m, 0o700)
        except FileExistsError:  # another party of this run created it first
            if not m.is_dir():
                raise


def _private_file(path: Path):
    """``path`` opened for writing text, created with mode 0600 (or made 0600 while still empty)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:  # a file left by an earlier run: truncated, nothing written
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "w", encoding="ascii")
    except BaseException:
        os.close(fd)
        raise


class TranscriptWriter:
    """Records the messages one party sends through a :class:`Network` (see module docstring)."""

    def __init__(self, directory: str | os.PathLike, party: str, **header: Any):
        d = Path(directory)
        try:
            _private_dir(d)
            self.path = d / f"{party}{SUFFIX}"
            self._file = _private_file(self.path)
        except OSError as exc:
            raise CovaultError(f"party {party!r}: cannot write its transcript in {d}: {exc}") from None
        self._lock = threading.Lock()
        self._seq = 0
        self._network: Network | None = None
        self._write({"format": FORMAT, "party": party, **header})

    def attach(self, network: Network) -> TranscriptWriter:
        """Record every message ``network`` sends from now on."""
        self._network = network
        network.add_recorder(self._record)
        return self

    def _write(self, obj: dict) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def _record(self, direction: str, peer: str, message: Message) -> None:
        if direction != "sent":
            return
        arrays = [
            {
                "dtype": a.dtype.str,
                "shape": list(a.shape),
                "data": base64.b64encode(a.tobytes()).decode("ascii"),
            }
            for a in message
        ]
        rounds = self._network.stats.rounds if self._network is not None else None
        with self._lock:
            self._write({"seq": self._seq, "round": rounds, "to": peer, "arrays": arrays})
            self._seq += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def read_transcript(path: str | os.PathLike) -> tuple[dict, Iterator[dict]]:
    """``(header, messages)``; each message dict has ``arrays`` decoded to numpy arrays."""
    f = open(path, encoding="ascii")
    header = json.loads(f.readline())
    if header.get("format") != FORMAT:
        f.close()
        raise CovaultError(f"{path} is not a covault transcript (format {header.get('format')!r})")

    def messages() -> Iterator[dict]:
        with f:
            for line in f:
                m = json.loads(line)
                m["arrays"] = [
                    np.frombuffer(base64.b64decode(a["data"]), np.dtype(a["dtype"])).reshape(a["shape"])
                    for a in m["arrays"]
                ]
                yield m

    return header, messages()
