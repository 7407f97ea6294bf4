"""The correlation-robust hash of OT extension: fixed-key AES in tweaked MMO form.

``H(x, i) = pi(x ^ i) ^ x ^ i`` with ``pi`` AES-128 under a fixed public key (Guo, Katz, Wang,
Yu, "Efficient and Secure Multiparty Computation from Fixed-Key Block Ciphers", IEEE S&P 2020;
the Matyas-Meyer-Oseas shape). The tweak ``i`` is two 64-bit lanes: the index of the OT over the
life of the extension (lane 0) and the index of the 16-byte block of its output (lane 1), so no
two hashed values of one run share a tweak. Outputs longer than a block are the concatenation of
blocks ``0, 1, ...``. Every call hashes all its blocks in one AES-ECB ``update_into``.

Security: with the tweak this is correlation robust for the inputs semi-honest IKNP hashes
(``t_j`` and ``t_j ^ s``, ``s`` unknown to the hash's caller, ``t_j`` uniform). A malicious
receiver could choose rows with ``t_j ^ i_j = t_k ^ i_k``; the malicious variant needs GKWY's
TCCR hash ``pi(pi(x) ^ i) ^ pi(x)`` (two AES calls per block).
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from covault.errors import ShapeError
from covault.protocols.ot.bits import Buffers

FIXED_KEY = hashlib.sha256(b"covault/ot/crhash/fixed-key/v1").digest()[:16]  # public by design


class FixedKeyHash:
    """Tweaked MMO over AES-128 with :data:`FIXED_KEY`."""

    __slots__ = ("_enc",)

    def __init__(self) -> None:
        # ECB is the point: a fixed-key permutation applied block by block, never encryption
        self._enc = Cipher(algorithms.AES(FIXED_KEY), modes.ECB()).encryptor()  # noqa: S305

    def __call__(
        self,
        rows: np.ndarray,
        start: int,
        blocks: int,
        *,
        delta: np.ndarray | None = None,
        buffers: Buffers | None = None,
    ) -> np.ndarray:
        """``H`` of every row (uint8 ``(n, 16)``), row ``j`` tweaked as OT ``start + j``: uint8
        ``(n, 16 blocks)``; with ``delta`` (uint8 ``(16,)``) the rows and the rows ``^ delta``
        together, ``(2, n, 16 blocks)``. With ``buffers`` the result lives in them (name
        ``"hash"``)."""
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 16 or blocks < 1:
            raise ShapeError(
                f"fixed-key hash: need uint8 rows (n, 16) and blocks >= 1, got {rows.dtype} {rows.shape}"
            )
        n = rows.shape[0]
        lead = () if delta is None else (2,)
        buf = Buffers() if buffers is None else buffers
        x = buf.get("hash-input", (*lead, n, blocks, 2), "<u8")
        words = np.ascontiguousarray(rows).view("<u8").reshape(n, 1, 2)
        if delta is None:
            x[...] = words
        else:
            x[0] = words
            np.bitwise_xor(words, np.ascontiguousarray(delta).view("<u8"), out=x[1])
        x[..., 0] ^= np.arange(start, start + n, dtype=np.uint64)[:, None]
        if blocks > 1:
            x[..., 1] ^= np.arange(blocks, dtype=np.uint64)
        size = x.nbytes
        raw = buf.get("hash", (size + 16,), np.uint8)
        self._enc.update_into(x.reshape(-1).view(np.uint8), raw)
        y = raw[:size].view("<u8").reshape(x.shape)
        y ^= x
        return y.view(np.uint8).reshape(*lead, n, 16 * blocks)
