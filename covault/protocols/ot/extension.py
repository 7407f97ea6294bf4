"""OT extension: IKNP with the ALSZ optimisations, batched in numpy (semi-honest).

Ishai, Kilian, Nissim, Petrank, "Extending Oblivious Transfers Efficiently", CRYPTO 2003;
Asharov, Lindell, Schneider, Zohner, "More Efficient Oblivious Transfer and Extensions for
Faster Secure Computation", CCS 2013 (random and correlated OT, seeds expanded by a PRG so the
base OTs are run once and their streams continue). ``kappa = 128``. Roles are those of the
extended OTs: the *sender* :class:`OTExtSender` gets message pairs, the *receiver*
:class:`OTExtReceiver` one message of each pair by its choice bit.

Set-up (first call, :mod:`covault.protocols.ot.base`, two flows): ``kappa`` base OTs with the
roles swapped. The sender draws ``s`` in ``{0,1}^kappa`` and learns ``k_i^{s_i}``; the receiver
holds both ``k_i^0, k_i^1``. ``G(k)`` is AES-128-CTR keyed by ``k`` (one stream per column).

Extension of ``n`` OTs with choices ``r`` (per batch of at most ``batch`` OTs, one message):

1. Receiver: columns ``t_i = G(k_i^0)``, ``u_i = t_i ^ G(k_i^1) ^ r`` (``n`` bits each); sends
   ``u`` (``kappa n / 8`` bytes: 16 bytes per OT).
2. Sender: ``q_i = G(k_i^{s_i}) ^ s_i u_i = t_i ^ s_i r``; transposed, row ``j`` is
   ``q_j = t_j ^ r_j s``.
3. ``H`` (:mod:`covault.protocols.ot.crhash`, tweak = the OT's index): the sender's pair is
   ``(H(q_j), H(q_j ^ s))``, the receiver's ``H(t_j)``, which is ``H(q_j ^ r_j s)``.

Outputs: *random OT* (``r`` uniform; no further message): the pairs are the messages.
*Chosen-message OT*: the sender sends ``m0 ^ H(q_j)``, ``m1 ^ H(q_j ^ s)`` (``2 b`` bytes per
OT for ``b``-byte messages; a second flow). *Correlated OT over Z_2^64* (ALSZ C-OT): the sender
takes ``x0_j = H(q_j)`` (``k`` words) and sends ``d_j = H(q_j ^ s) - x0_j - delta_j`` (``8 k``
bytes per OT); the receiver outputs ``H(t_j) - r_j d_j = x0_j + r_j delta_j``. With ``nbytes``
(both sides, per OT, 1, 2, 4 or 8) only the low ``nbytes_j`` bytes of each word of ``d_j``
travel (the words cast to that unsigned type: a contiguous conversion, one array per run of
equal widths), and the outputs agree modulo ``2^(8 nbytes_j)`` only: enough where the caller
multiplies them by ``2^t`` with ``8 nbytes_j >= 64 - t`` (Gilboa's bit products; the "shortened
corrections" of Demmler, Schneider, Zohner, "ABY", NDSS 2015, at word-type granularity).

Cost per OT: 16 bytes receiver to sender (IKNP's ``kappa`` bits), plus ``2 b`` (chosen) or
``8 k`` (correlated) bytes back; computation ``2 n kappa`` (receiver) / ``n kappa`` (sender) PRG
bits, one bit-matrix transpose per side, one fixed-key AES block per output block. Rounds: one
flow for random OT, two for chosen and correlated: a call of ``n > batch`` OTs sends one message
per batch, the receiver all of its batches before it reads a reply, the sender its replies
after the last batch arrived (it computes each as its batch arrives), so the batches of a call
form one flight each way. Both parties must make the same calls in the same order (each batch
names its operation and size; a mismatch is a PeerError naming the peer); after a call that
stopped half-way the pair refuses further calls (its two states may differ).

Threat model: semi-honest parties. Security rests on the base OTs (CDH, random oracle), AES-CTR
as a PRG and ``H`` correlation robust. ``s`` must stay secret: the sender never reveals it and
every OT's tweak is used once. What malicious security adds: the KOS consistency check (Keller,
Orsini, Scholl, CRYPTO 2015: the receiver proves with random linear combinations over
GF(2^128) that one ``r`` was used in every column, ``kappa + s`` extra OTs sacrificed, about 2%
more time), GKWY's TCCR hash ``pi(pi(x) ^ i) ^ pi(x)`` (a malicious receiver can choose related
rows), a maliciously secure base OT (Masny-Rindal), and for chosen OT nothing more; correlated OT
outputs stay unauthenticated (SPDZ-style MACs would be a layer above).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np

from covault.errors import PeerError, ProtocolError, ShapeError
from covault.protocols.ot.base import base_ot_recv, base_ot_send, random_choices
from covault.protocols.ot.bits import Buffers, ColumnPRG, transpose
from covault.protocols.ot.channel import OTChannel
from covault.protocols.ot.crhash import FixedKeyHash

KAPPA = 128
BLOCK = 16
BATCH = 1 << 18  # OTs per message (batches pipeline: the sender works on one as the next arrives)
OP_RANDOM, OP_CHOSEN, OP_COT = 1, 2, 3


def _describe(op: int, arg: int) -> str:
    if op == OP_RANDOM:
        return "random OT"
    if op == OP_CHOSEN:
        return f"chosen-message OT of {arg}-byte messages"
    if op == OP_COT:
        return f"correlated OT of {arg} words"
    return f"unknown operation {op}"


def _columns_bytes(size: int) -> int:
    """Bytes per column for ``size`` OTs: whole 64-row tiles of the transpose."""
    return -(-size // 64) * 8


def _count(n: object, who: str, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ShapeError(f"OT extension {who} ({what}): n must be an int >= 0, got {n!r}")
    return int(n)


WIDTH_TYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.int64}  # bytes of a shortened word


def _widths(nbytes: object, n: int, who: str) -> np.ndarray | None:
    """Per-OT correction widths in bytes (uint8 ``(n,)``, each 1, 2, 4 or 8), or None (8)."""
    if nbytes is None:
        return None
    b = np.asarray(nbytes)
    if b.shape != (n,) or b.dtype.kind not in "iu" or not np.isin(b, tuple(WIDTH_TYPES)).all():
        raise ShapeError(
            f"OT extension {who} (correlated OT): nbytes must be ({n},) integers 1, 2, 4 or 8, got "
            f"{b.dtype} {b.shape}"
        )
    return b.astype(np.uint8)


def _runs(widths: np.ndarray | None, size: int) -> list[tuple[int, int, type]]:
    """``(start, stop, word type)`` of the runs of equal widths (one run of int64 without)."""
    if widths is None:
        return [(0, size, np.int64)]
    cuts = [0, *(np.flatnonzero(np.diff(widths)) + 1).tolist(), widths.size]
    return [(a, b, WIDTH_TYPES[int(widths[a])]) for a, b in pairwise(cuts) if b > a]


def _choice_bits(choices: object, who: str, what: str) -> np.ndarray:
    c = np.asarray(choices)
    if c.ndim != 1 or c.dtype.kind not in "biu" or bool(np.any((c != 0) & (c != 1))):
        raise ShapeError(
            f"OT extension {who} ({what}): choices must be a 1-d array of 0/1, got {c.dtype} {c.shape}"
        )
    return c.astype(np.uint8)


class _Party:
    """What both roles share: the channel, the base-OT tag, the OT counter and the hash."""

    role = "party"

    def __init__(self, channel: OTChannel, *, tag: bytes = b"", batch: int = BATCH) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 64:
            raise ShapeError(f"OT extension {self.role}: batch must be an int >= 64, got {batch!r}")
        if not isinstance(tag, bytes):
            raise ShapeError(f"OT extension {self.role}: tag must be bytes, got {type(tag).__name__}")
        self.channel = channel
        self.tag = tag
        self.batch = batch - batch % 64
        self.done = 0  # OTs extended so far (the hash's tweak)
        self._hash = FixedKeyHash()
        self._buf = Buffers()
        self._ready = False
        self._failed = False  # a call began and did not finish: the parties' states may differ

    def _start(self) -> None:
        """Begin a call: refuse if an earlier one stopped half-way; run the base OTs once."""
        if self._failed:
            raise ProtocolError(
                f"OT extension {self.role} with party {self.channel.peer!r}: an earlier call stopped "
                "half-way, so the two parties' states may differ; start a new sender and receiver"
            )
        self.setup()
        self._failed = True

    def _start_setup(self) -> None:
        if self._failed:
            raise ProtocolError(
                f"OT extension {self.role} with party {self.channel.peer!r}: the base OTs stopped "
                "half-way; start a new sender and receiver"
            )
        self._failed = True

    def _finish(self, n: int) -> None:
        self.done += n
        self._failed = False

    def _batches(self, n: int) -> list[tuple[int, int]]:
        return [(lo, min(n, lo + self.batch)) for lo in range(0, n, self.batch)]

    def _bad(self, what: str) -> PeerError:
        return PeerError(self.channel.peer, f"OT extension ({self.role} side): {what}")


class OTExtSender(_Party):
    """The sender of IKNP OT extension over ``channel`` (the peer runs :class:`OTExtReceiver`
    with the same calls in the same order)."""

    role = "sender"

    def setup(self) -> None:
        """Run the base OTs (on first use; again never)."""
        if self._ready:
            return
        self._start_setup()
        s = random_choices(KAPPA)
        keys = base_ot_recv(self.channel, s, self.tag)
        self._prg = ColumnPRG(keys)
        self._s = s.astype(bool)
        self._s_row = np.packbits(s, bitorder="little")
        self._ready, self._failed = True, False

    def _rows(self, op: int, arg: int, size: int) -> np.ndarray:
        """Receive one batch's ``u`` and return its rows ``q_j``: uint8 ``(size, 16)``."""
        m = _columns_bytes(size)
        msg = self.channel.recv()
        if len(msg) != 2 or msg[0].dtype != np.int64 or msg[0].shape != (3,):
            raise self._bad(f"expected a header and a matrix, got {len(msg)} arrays")
        got = tuple(int(v) for v in msg[0])
        if got != (op, arg, size):
            raise self._bad(
                f"the peer runs {_describe(got[0], got[1])} of {got[2]} OTs, this party "
                f"{_describe(op, arg)} of {size} OTs"
            )
        u = msg[1]
        if u.dtype != np.uint8 or u.shape != (KAPPA, m):
            raise self._bad(f"matrix u must be uint8 ({KAPPA}, {m}), got {u.dtype} {u.shape}")
        q = self._prg.expand(m, self._buf.get("columns", (KAPPA, m), np.uint8))
        np.bitwise_xor(q, u, out=q, where=self._s[:, None])
        return transpose(q, self._buf)[:size]

    def _send_all(self, replies: list[list[np.ndarray]]) -> None:
        """Send the replies of every batch once all batches arrived: one flight each way."""
        for reply in replies:
            self.channel.send(reply)

    def _pairs(self, op: int, arg: int, lo: int, hi: int, blocks: int) -> np.ndarray:
        q = self._rows(op, arg, hi - lo)
        return self._hash(q, self.done + lo, blocks, delta=self._s_row, buffers=self._buf)

    def random_ot(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random OTs: the message pairs ``(m0, m1)``, uint8 ``(n, 16)`` each."""
        n = _count(n, self.role, "random OT")
        self._start()
        m0 = np.empty((n, BLOCK), dtype=np.uint8)
        m1 = np.empty((n, BLOCK), dtype=np.uint8)
        for lo, hi in self._batches(n):
            h = self._pairs(OP_RANDOM, 0, lo, hi, 1)
            m0[lo:hi], m1[lo:hi] = h[0], h[1]
        self._finish(n)
        return m0, m1

    def chosen_ot(self, m0: np.ndarray, m1: np.ndarray) -> None:
        """Offer the pairs ``(m0[j], m1[j])`` (uint8 ``(n, b)`` each, ``b >= 1`` bytes)."""
        if (
            not isinstance(m0, np.ndarray)
            or not isinstance(m1, np.ndarray)
            or m0.dtype != np.uint8
            or m0.ndim != 2
            or m0.shape[1] < 1
            or m1.dtype != np.uint8
            or m1.shape != m0.shape
        ):
            raise ShapeError(
                "OT extension sender (chosen-message OT): m0 and m1 must be uint8 arrays of one "
                f"shape (n, b), b >= 1; got {getattr(m0, 'shape', m0)!r} and {getattr(m1, 'shape', m1)!r}"
            )
        n, b = m0.shape
        self._start()
        blocks = -(-b // BLOCK)
        replies = []
        for lo, hi in self._batches(n):
            pad = self._pairs(OP_CHOSEN, b, lo, hi, blocks)[:, :, :b]
            replies.append([pad[0] ^ m0[lo:hi], pad[1] ^ m1[lo:hi]])
        self._send_all(replies)
        self._finish(n)

    def cot_send(self, n: int, delta: np.ndarray, nbytes: np.ndarray | None = None) -> np.ndarray:
        """``n`` correlated OTs over Z_2^64 with ``delta`` (int64 ``(n, k)``): returns ``x0``
        (int64 ``(n, k)``, uniform); the receiver gets ``x0 + c * delta`` (modulo
        ``2^(8 nbytes_j)`` for OT ``j`` with ``nbytes``, the same at both sides)."""
        n = _count(n, self.role, "correlated OT")
        widths = _widths(nbytes, n, self.role)
        if (
            not isinstance(delta, np.ndarray)
            or delta.dtype != np.int64
            or delta.ndim != 2
            or delta.shape[0] != n
        ):
            raise ShapeError(
                f"OT extension sender (correlated OT): delta must be int64 ({n}, k), got "
                f"{getattr(delta, 'dtype', type(delta).__name__)} {getattr(delta, 'shape', '')}"
            )
        k = delta.shape[1]
        if k < 1:
            raise ShapeError("OT extension sender (correlated OT): delta needs k >= 1 words per OT")
        self._start()
        blocks = -(-k // 2)
        x0 = np.empty((n, k), dtype=np.int64)
        replies = []
        for lo, hi in self._batches(n):
            h = self._pairs(OP_COT, k, lo, hi, blocks).view(np.int64)[:, :, :k]
            x0[lo:hi] = h[0]
            d = h[1] - h[0] - delta[lo:hi]
            runs = _runs(None if widths is None else widths[lo:hi], hi - lo)
            replies.append([d[a:b].astype(t, copy=False) for a, b, t in runs])
        self._send_all(replies)
        self._finish(n)
        return x0

    def cot_send_derived(self, n: int, k: int, derive: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``n`` correlated OTs of ``k`` words whose ``delta = derive(x0)`` is chosen once ``x0``
        (int64 ``(n, k)``, uniform) is known; returns ``x0``; the receiver (``cot_recv``, the
        same call) gets ``x0 + c * delta``. Still one flight each way: the receiver's ``u``
        fixes ``x0 = H(q_j)`` before any reply. Security condition, the caller's to keep:
        ``delta_j`` may depend on ``x0_i`` of earlier OTs only (``i < j`` in some order, no
        cycles; never on ``x0_j`` itself). Then each output the receiver gets has a fresh term
        (``x0_j`` itself, or the pad ``H(q_j ^ s)`` hiding it) and its view is uniform, as with
        ``cot_send``; ``delta = x0`` (a cycle of one) would give it ``2 x0`` with choice 1.
        Used where a correlation depends on earlier layers' outputs (:mod:`covault.ops.benes`:
        layer ``L``'s ``delta`` is read before layer ``L``'s outputs are applied)."""
        n = _count(n, self.role, "correlated OT")
        k = _count(k, self.role, "correlated OT")
        if k < 1:
            raise ShapeError("OT extension sender (correlated OT): k must be >= 1 words per OT")
        self._start()
        blocks = -(-k // 2)
        x0 = np.empty((n, k), dtype=np.int64)
        pads = np.empty((n, k), dtype=np.int64)
        batches = self._batches(n)
        for lo, hi in batches:
            h = self._pairs(OP_COT, k, lo, hi, blocks).view(np.int64)[:, :, :k]
            x0[lo:hi], pads[lo:hi] = h[0], h[1]
        view = x0.view()
        view.flags.writeable = False
        delta = derive(view)
        if not isinstance(delta, np.ndarray) or delta.dtype != np.int64 or delta.shape != (n, k):
            raise ShapeError(
                f"OT extension sender (correlated OT): derive must return int64 ({n}, {k}), got "
                f"{getattr(delta, 'dtype', type(delta).__name__)} {getattr(delta, 'shape', '')}"
            )
        pads -= x0
        pads -= delta
        self._send_all([[pads[lo:hi]] for lo, hi in batches])
        self._finish(n)
        return x0


class OTExtReceiver(_Party):
    """The receiver of IKNP OT extension over ``channel`` (the peer runs :class:`OTExtSender`)."""

    role = "receiver"

    def setup(self) -> None:
        """Run the base OTs (on first use; again never)."""
        if self._ready:
            return
        self._start_setup()
        k0, k1 = base_ot_send(self.channel, KAPPA, self.tag)
        self._g0, self._g1 = ColumnPRG(k0), ColumnPRG(k1)
        self._ready, self._failed = True, False

    def _send_u(self, op: int, arg: int, c: np.ndarray, lo: int, hi: int, blocks: int) -> np.ndarray:
        """Send one batch's ``u`` for choices ``c[lo:hi]``; return ``H(t_j)``: uint8 ``(size, 16 blocks)``
        (in the buffers, overwritten by the next batch)."""
        size = hi - lo
        m = _columns_bytes(size)
        r = np.zeros(m, dtype=np.uint8)
        r[: (size + 7) // 8] = np.packbits(c[lo:hi], bitorder="little")
        t = self._g0.expand(m, self._buf.get("columns", (KAPPA, m), np.uint8))
        u = self._g1.expand(m)  # fresh: the message may be read after this returns
        u ^= t
        u ^= r
        self.channel.send([np.array([op, arg, size], dtype=np.int64), u])
        return self._hash(transpose(t, self._buf)[:size], self.done + lo, blocks, buffers=self._buf)

    def _reply(self, shape: tuple[int, ...], dtype: type, count: int) -> list[np.ndarray]:
        msg = self.channel.recv()
        if len(msg) != count or any(a.dtype != dtype or a.shape != shape for a in msg):
            got = [(str(a.dtype), a.shape) for a in msg]
            raise self._bad(f"expected {count} arrays {np.dtype(dtype)} {shape}, got {got}")
        return msg

    def random_ot(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random OTs: uniform choices (uint8 0/1, ``(n,)``) and ``m_c`` (uint8 ``(n, 16)``)."""
        n = _count(n, self.role, "random OT")
        self._start()
        c = random_choices(n) if n else np.zeros(0, np.uint8)
        out = np.empty((n, BLOCK), dtype=np.uint8)
        for lo, hi in self._batches(n):
            out[lo:hi] = self._send_u(OP_RANDOM, 0, c, lo, hi, 1)
        self._finish(n)
        return c, out

    def chosen_ot(self, choices: np.ndarray, nbytes: int) -> np.ndarray:
        """Receive ``m_{c_j}`` of every pair (``nbytes``-byte messages): uint8 ``(n, nbytes)``."""
        c = _choice_bits(choices, self.role, "chosen-message OT")
        b = _count(nbytes, self.role, "chosen-message OT")
        if b < 1:
            raise ShapeError("OT extension receiver (chosen-message OT): nbytes must be >= 1")
        self._start()
        n, blocks = c.size, -(-b // BLOCK)
        batches = self._batches(n)
        out = np.empty((n, b), dtype=np.uint8)
        for lo, hi in batches:
            out[lo:hi] = self._send_u(OP_CHOSEN, b, c, lo, hi, blocks)[:, :b]
        for lo, hi in batches:
            y0, y1 = self._reply((hi - lo, b), np.uint8, 2)
            out[lo:hi] ^= np.where(c[lo:hi, None].astype(bool), y1, y0)
        self._finish(n)
        return out

    def cot_recv(self, choices: np.ndarray, k: int, nbytes: np.ndarray | None = None) -> np.ndarray:
        """``len(choices)`` correlated OTs of ``k`` words: ``x0 + c * delta``, int64 ``(n, k)``
        (modulo ``2^(8 nbytes_j)`` for OT ``j`` with ``nbytes``, as the sender's call)."""
        c = _choice_bits(choices, self.role, "correlated OT")
        k = _count(k, self.role, "correlated OT")
        widths = _widths(nbytes, c.size, self.role)
        if k < 1:
            raise ShapeError("OT extension receiver (correlated OT): k must be >= 1 words per OT")
        self._start()
        n, blocks = c.size, -(-k // 2)
        batches = self._batches(n)
        out = np.empty((n, k), dtype=np.int64)
        for lo, hi in batches:
            out[lo:hi] = self._send_u(OP_COT, k, c, lo, hi, blocks).view(np.int64)[:, :k]
        for lo, hi in batches:
            runs = _runs(None if widths is None else widths[lo:hi], hi - lo)
            msg = self.channel.recv()
            if len(msg) != len(runs) or any(
                m.dtype != t or m.shape != (b - a, k) for m, (a, b, t) in zip(msg, runs)
            ):
                got = [(str(m.dtype), m.shape) for m in msg]
                want = [(np.dtype(t).name, (b - a, k)) for a, b, t in runs]
                raise self._bad(f"expected corrections {want}, got {got}")
            for m, (a, b, _) in zip(msg, runs):
                out[lo + a : lo + b] -= m * c[lo + a : lo + b, None].astype(np.int64)
        self._finish(n)
        return out
