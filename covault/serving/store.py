"""The file of one party's shares of one model: ``DIR/MODEL.PARTY.shares``.

Layout: ``MAGIC``, the header length (4 bytes, little-endian), the header (UTF-8 JSON: the
model's public description), a 12-byte nonce, then AES-256-GCM of the shares (int64,
little-endian, tensor after tensor) with the header as associated data. The header is
public (model name, kind, layers and shapes, protocol, compute parties, this party, the
fixed-point bits, each tensor's fractional bits and bound, the model id and source); the
GCM tag binds it to the shares, so a header copied from another file, another party's file,
a flipped byte or a wrong key are all refused by name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from covault.errors import CovaultError

MAGIC = b"covault shares v1\n"
NONCE_BYTES = 12
MAX_HEADER = 1 << 20
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ModelStoreError(CovaultError):
    """A model file or at-rest key that cannot be written, read or trusted; names the file
    and the party."""


def check_name(name: str, what: str = "model name") -> str:
    """``name`` if it is a safe file-name part (letters, digits, ``_ . -``), else ModelStoreError."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise ModelStoreError(f"{what} {name!r}: use letters, digits, '_', '.' and '-' (at most 128)")
    return name


def model_file(store_dir: str | Path, name: str, party: str) -> Path:
    """The file of ``party``'s shares of model ``name`` in ``store_dir``."""
    return Path(store_dir) / f"{check_name(name)}.{check_name(party, 'party name')}.shares"


def write_shares(path: Path, key: bytes, header: dict[str, Any], arrays: list[np.ndarray]) -> int:
    """Encrypt ``arrays`` (int64) under ``key`` with ``header`` authenticated; write ``path``
    atomically (a temporary file renamed), mode 0600. Returns the file's size."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = b"".join(np.ascontiguousarray(a, dtype="<i8").tobytes() for a in arrays)
    nonce = os.urandom(NONCE_BYTES)
    blob = (
        MAGIC
        + len(head).to_bytes(4, "little")
        + head
        + nonce
        + AESGCM(key).encrypt(nonce, body, MAGIC + head)
    )
    party = header.get("party")
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelStoreError(f"party {party!r}: cannot write model file {path}: {exc.strerror}") from None
    return len(blob)


def read_header(path: Path, party: str) -> tuple[dict[str, Any], bytes]:
    """The (unauthenticated) header of ``path`` and the whole file's bytes."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelStoreError(f"party {party!r}: no model file {path}") from None
    except OSError as exc:
        raise ModelStoreError(f"party {party!r}: cannot read model file {path}: {exc.strerror}") from None
    n = len(MAGIC)
    if blob[:n] != MAGIC or len(blob) < n + 4:
        raise ModelStoreError(f"party {party!r}: {path} is not a covault model file")
    size = int.from_bytes(blob[n : n + 4], "little")
    if size > MAX_HEADER or len(blob) < n + 4 + size + NONCE_BYTES + 16:
        raise ModelStoreError(f"party {party!r}: model file {path} is truncated or damaged")
    try:
        header = json.loads(blob[n + 4 : n + 4 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelStoreError(f"party {party!r}: model file {path} has a damaged header") from None
    if not isinstance(header, dict):
        raise ModelStoreError(f"party {party!r}: model file {path} has a damaged header")
    return header, blob


def read_shares(
    path: Path, key: bytes, party: str, expect: dict[str, Any]
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and share arrays of ``path``, decrypted with ``key``. The header must agree
    with ``expect`` on every key given (model name, party, protocol, ...): a file of another
    model, party or protocol is refused naming the key; then a wrong key or an altered byte
    fails the GCM tag."""
    header, blob = read_header(path, party)
    for k, v in expect.items():
        if header.get(k) != v:
            raise ModelStoreError(
                f"party {party!r}: model file {path} is for {k} {header.get(k)!r}, not {v!r}"
            )
    n = len(MAGIC)
    size = int.from_bytes(blob[n : n + 4], "little")
    head = blob[n + 4 : n + 4 + size]
    nonce = blob[n + 4 + size : n + 4 + size + NONCE_BYTES]
    try:
        body = AESGCM(key).decrypt(nonce, blob[n + 4 + size + NONCE_BYTES :], MAGIC + head)
    except InvalidTag:
        raise ModelStoreError(
            f"party {party!r}: model file {path} does not decrypt with its at-rest key: "
            "the key is not the one it was written with, or the file was altered"
        ) from None
    k = int(header["components"])
    arrays, at = [], 0
    for t in header["tensors"]:
        count = k * int(np.prod(t["shape"], dtype=np.int64))
        a = np.frombuffer(body, dtype="<i8", count=count, offset=at * 8).astype(np.int64)
        arrays.append(a.reshape(k, *t["shape"]))
        at += count
    if at * 8 != len(body):
        raise ModelStoreError(f"party {party!r}: model file {path}: the shares do not match the header")
    return header, arrays
