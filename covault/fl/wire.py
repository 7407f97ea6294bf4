"""The messages of a SecAgg+ round as bytes (little-endian), and their parsers.

Parsers raise ValueError describing the problem; the server turns it into
:class:`~covault.fl.errors.MalformedMessageError` naming the client, a client into
:class:`~covault.fl.errors.SecAggError` naming the server.

======================  =========================================================  ===============
message                 layout                                                      bytes
======================  =========================================================  ===============
keys (1, c -> s)        ``c_pk || s_pk``                                            64
neighbour keys (s -> c) per neighbour ``id u32 || c_pk || s_pk``                   68 per neighbour
shares (2, c -> s, and  per neighbour ``id u32 || len u32 || AES-GCM ciphertext``  176 per neighbour
s -> c forwarded)       (plaintext ``u u32 || v u32 || share(s_sk) || share(b)``)
masked input (3)        ``dim`` ring words                                          ``dim * b / 8``
unmask request (s -> c) ``n u32 || survivor ids || m u32 || dropped ids``           4 per id + 8
unmask shares (4)       per share ``id u32 || kind u8 || share``                    71 per share
======================  =========================================================  ===============
"""

from __future__ import annotations

import struct

import numpy as np

from covault.fl import shamir
from covault.fl.keys import KEY_BYTES

KEYS_BYTES = 2 * KEY_BYTES
NEIGHBOUR_RECORD = 4 + KEYS_BYTES
SHARE_PLAINTEXT = 8 + 2 * shamir.SHARE_BYTES
UNMASK_RECORD = 5 + shamir.SHARE_BYTES
SELF, SECRET_KEY = 0, 1  # kinds of an unmask share: of the self-mask seed b_u, or of s_sk_u


def keys(c_pk: bytes, s_pk: bytes) -> bytes:
    return c_pk + s_pk


def parse_keys(data: bytes) -> tuple[bytes, bytes]:
    if len(data) != KEYS_BYTES:
        raise ValueError(f"public keys: expected {KEYS_BYTES} bytes, got {len(data)}")
    return data[:KEY_BYTES], data[KEY_BYTES:]


def neighbour_keys(entries: dict[int, tuple[bytes, bytes]]) -> bytes:
    return b"".join(struct.pack("<I", v) + c + s for v, (c, s) in sorted(entries.items()))


def parse_neighbour_keys(data: bytes) -> dict[int, tuple[bytes, bytes]]:
    if len(data) % NEIGHBOUR_RECORD:
        raise ValueError(f"neighbour keys: {len(data)} bytes is not a multiple of {NEIGHBOUR_RECORD}")
    out = {}
    for i in range(0, len(data), NEIGHBOUR_RECORD):
        (v,) = struct.unpack_from("<I", data, i)
        out[v] = parse_keys(data[i + 4 : i + NEIGHBOUR_RECORD])
    return out


def envelopes(items: dict[int, bytes]) -> bytes:
    """``{id: ciphertext}`` as records ``id || len || ciphertext``."""
    return b"".join(struct.pack("<II", v, len(ct)) + ct for v, ct in sorted(items.items()))


def parse_envelopes(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(data):
        if i + 8 > len(data):
            raise ValueError("encrypted shares: a truncated record header")
        v, n = struct.unpack_from("<II", data, i)
        if v in out or i + 8 + n > len(data):
            raise ValueError(f"encrypted shares: a duplicate or truncated record for client {v}")
        out[v] = data[i + 8 : i + 8 + n]
        i += 8 + n
    return out


def share_plaintext(u: int, v: int, sk_share: int, b_share: int) -> bytes:
    return struct.pack("<II", u, v) + shamir.to_bytes(sk_share) + shamir.to_bytes(b_share)


def parse_share_plaintext(data: bytes) -> tuple[int, int, int, int]:
    if len(data) != SHARE_PLAINTEXT:
        raise ValueError(f"shares: expected {SHARE_PLAINTEXT} bytes of plaintext, got {len(data)}")
    u, v = struct.unpack_from("<II", data)
    n = shamir.SHARE_BYTES
    return u, v, shamir.from_bytes(data[8 : 8 + n]), shamir.from_bytes(data[8 + n :])


def masked(y: np.ndarray) -> bytes:
    return y.astype(y.dtype.newbyteorder("<"), copy=False).tobytes()


def parse_masked(data: bytes, dim: int, dtype: type) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    if len(data) != dim * size:
        raise ValueError(f"masked input: expected {dim} x {size} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def unmask_request(survivors: list[int], dropped: list[int]) -> bytes:
    return b"".join(struct.pack(f"<I{len(ids)}I", len(ids), *ids) for ids in (survivors, dropped))


def parse_unmask_request(data: bytes) -> tuple[list[int], list[int]]:
    lists, i = [], 0
    for _ in range(2):
        if i + 4 > len(data):
            raise ValueError("unmask request: truncated")
        (n,) = struct.unpack_from("<I", data, i)
        if i + 4 + 4 * n > len(data):
            raise ValueError("unmask request: truncated id list")
        lists.append(list(struct.unpack_from(f"<{n}I", data, i + 4)))
        i += 4 + 4 * n
    if i != len(data):
        raise ValueError("unmask request: trailing bytes")
    return lists[0], lists[1]


def unmask_shares(items: list[tuple[int, int, int]]) -> bytes:
    """``(client id, kind, share)`` records."""
    return b"".join(struct.pack("<IB", u, kind) + shamir.to_bytes(s) for u, kind, s in items)


def parse_unmask_shares(data: bytes) -> list[tuple[int, int, int]]:
    if len(data) % UNMASK_RECORD:
        raise ValueError(f"unmask shares: {len(data)} bytes is not a multiple of {UNMASK_RECORD}")
    out = []
    for i in range(0, len(data), UNMASK_RECORD):
        u, kind = struct.unpack_from("<IB", data, i)
        if kind not in (SELF, SECRET_KEY):
            raise ValueError(f"unmask shares: unknown kind {kind} for client {u}")
        out.append((u, kind, shamir.from_bytes(data[i + 5 : i + UNMASK_RECORD])))
    return out
