"""Yao's protocol between a garbler and an evaluator, batched over many circuit instances.

:class:`YaoParty` is one party's end over an :class:`~covault.protocols.ot.channel.OTChannel`
(the garbler is the OT sender, the evaluator the OT receiver of
:mod:`covault.protocols.ot.extension`). :meth:`YaoParty.run` evaluates ``n`` instances of a
circuit on both parties' input bits and leaves each output bit XOR-shared: the garbler keeps
the permute bit ``p = lsb(W_0)`` of each output wire, the evaluator ``lsb(W_v) = p ^ v``.
:meth:`YaoParty.run` with weights returns additive shares of a weighted sum of the outputs
instead (output translation, no extra flow); :meth:`YaoParty.to_arith` turns XOR-shared output
bits into additive shares of an integer afterwards.

Steps of :meth:`YaoParty.run`, per chunk of at most ``chunk`` instances (``e`` evaluator input
bits per instance, ``N = e n``):

1. Evaluator: ``N`` random OTs (it gets choices ``r`` and ``m_r``) and ``c ^ r`` for its input
   bits ``c`` (one flow: 16 bytes per OT for IKNP's matrix, 1 bit per OT).
2. Garbler: the OT's pair ``(m_0, m_1)`` becomes a free-XOR label pair: the zero-label is
   ``m_(c^r)`` and ``d = m_0 ^ m_1 ^ delta`` (Asharov, Lindell, Schneider, Zohner, CCS 2013:
   correlated OT of labels); its own inputs' zero-labels are drawn from the AES-CTR PRG; it
   garbles (:func:`~covault.protocols.gc.garble.garble`) and sends its inputs' labels
   ``W_0 ^ x delta``, ``d``, the tables and, for arithmetic outputs, the output translation
   (:func:`~covault.protocols.gc.garble.translate`: 16 bytes per output bit) in one flow.
3. Evaluator: its labels are ``m_r ^ c d`` (= ``W_0 ^ c delta``); it evaluates, and reads
   its output shares (permute bits, or its additive share through the translation).
The evaluator sends a chunk's OTs before it reads the previous chunk's garbling, so chunks
stream without waiting for each other; a call costs the base OTs once per party (first call)
and one round trip.

Cost per instance: ``16 g + 32.125 e + 32 a (+ 16 k)`` bytes (``g`` garbler input bits, ``a``
AND gates, ``k`` translated outputs; 16 + 0.125 bytes per evaluator bit evaluator to garbler,
the rest garbler to evaluator).

:meth:`YaoParty.to_arith`, for output bits left XOR-shared (ABY's B2A by correlated OT, Demmler, Schneider, Zohner, NDSS 2015):
bit ``b = p_g ^ p_e = p_g + p_e - 2 p_g p_e``; one correlated OT over Z_2^64 per bit
(garbler sends, ``delta = 2 w p_g``; evaluator chooses ``p_e``) gives additive shares of
``2 w p_g p_e``; with weights ``w_i`` (``2^i``, the top bit ``-2^(k-1)`` for signed words)
the shares sum to the integer. Cost: 24 bytes per output bit and one more round trip.

Threat model: semi-honest. What the evaluator sees is uniform labels, ``c ^ r``-independent OT
messages and tables that are pseudorandom under the hash's circular correlation robustness; the
garbler sees only the OT messages (``c ^ r`` is uniform). Malicious security would need
authenticated garbling or cut-and-choose (a malicious garbler could garble another function),
a maliciously secure OT with KOS's check, and the TCCR/CCR hash against chosen labels.
"""

from __future__ import annotations

import os

import numpy as np

from covault.errors import PeerError, ShapeError
from covault.protocols.gc.circuit import Circuit
from covault.protocols.gc.garble import evaluate, garble, permute_bits, read_translation, translate
from covault.protocols.gc.hash import GarbleHash
from covault.protocols.ot.channel import OTChannel
from covault.protocols.ot.extension import OTExtReceiver, OTExtSender
from covault.randomness.prg import PRG, new_seed

GARBLER, EVALUATOR = "garbler", "evaluator"
CHUNK = 1 << 14


def _bits(what: str, bits: object, rows: int) -> np.ndarray:
    b = np.asarray(bits)
    if (
        b.ndim != 2
        or b.shape[0] != rows
        or b.dtype.kind not in "biu"
        or (b.size and (b.min() < 0 or b.max() > 1))
    ):
        raise ShapeError(
            f"{what}: input bits must be a 0/1 integer array ({rows}, n), got {b.dtype} {b.shape}"
        )
    return b.astype(np.uint8)


class YaoParty:
    """One party's end (``role`` 'garbler' or 'evaluator') of batched Yao over ``channel``; the
    peer makes the same calls in the same order in the other role."""

    def __init__(
        self, channel: OTChannel, role: str, *, chunk: int = CHUNK, tag: bytes = b"covault/gc"
    ) -> None:
        if role not in (GARBLER, EVALUATOR):
            raise ShapeError(f"garbled circuits: role must be {GARBLER!r} or {EVALUATOR!r}, got {role!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ShapeError(f"garbled circuits ({role}): chunk must be an int >= 1, got {chunk!r}")
        self.channel = channel
        self.role = role
        self.chunk = chunk
        self.done = 0  # instances garbled so far: the tweaks' instance numbers
        if role == GARBLER:
            self.ot: OTExtSender | OTExtReceiver = OTExtSender(channel, tag=tag)
            self._prg = PRG(new_seed())
            self._delta = self._prg.words(2, np.uint64)
            self._delta[0] |= np.uint64(1)
            self._hash = GarbleHash(os.urandom(16))  # fresh per garbler: public, sent with the tables
        else:
            self.ot = OTExtReceiver(channel, tag=tag)
            self._hash = None

    def _bad(self, what: str) -> PeerError:
        return PeerError(self.channel.peer, f"garbled circuit ({self.role} side): {what}")

    # -- evaluation ------------------------------------------------------------------------------
    def run(self, circuit: Circuit, bits: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Evaluate the circuit on this party's input bits (uint8 0/1 ``(inputs, n)``: the
        garbler's or the evaluator's inputs of ``circuit``). Without ``weights``: this party's
        XOR shares of the outputs, uint8 ``(outputs, n)``. With ``weights`` (int64, one per
        output): additive shares in Z_2^64 of ``sum_i weights[i] * out_i``, int64 ``(n,)``, by
        output translation in the same flow (Y2A without a round of its own)."""
        mine = circuit.garbler_inputs if self.role == GARBLER else circuit.evaluator_inputs
        b = _bits(f"garbled circuit ({self.role} side)", bits, len(mine))
        if weights is not None:
            weights = np.asarray(weights, dtype=np.int64)
            if weights.shape != (len(circuit.outputs),):
                raise ShapeError(
                    f"garbled circuit ({self.role} side): {len(circuit.outputs)} output weights "
                    f"needed, got shape {weights.shape}"
                )
        n = b.shape[1]
        spans = [(lo, min(n, lo + self.chunk)) for lo in range(0, n, self.chunk)]
        out = np.empty(
            (len(circuit.outputs), n) if weights is None else (n,),
            dtype=np.uint8 if weights is None else np.int64,
        )
        if self.role == GARBLER:
            for lo, hi in spans:
                out[..., lo:hi] = self._garble_chunk(circuit, b[:, lo:hi], self.done + lo, weights)
        else:
            pending = self._offer(circuit, b, *spans[0]) if spans else None
            for i, (lo, hi) in enumerate(spans):
                nxt = self._offer(circuit, b, *spans[i + 1]) if i + 1 < len(spans) else None
                out[..., lo:hi] = self._evaluate_chunk(circuit, pending, self.done + lo, weights)
                pending = nxt
        self.done += n
        return out

    def _garble_chunk(
        self, circuit: Circuit, x: np.ndarray, offset: int, weights: np.ndarray | None
    ) -> np.ndarray:
        g, e, m = len(circuit.garbler_inputs), len(circuit.evaluator_inputs), x.shape[1]
        zero = np.empty((g + e, m, 2), dtype=np.uint64)
        self._prg.bytes_into(zero[:g])
        d = np.empty((e, m, 2), dtype=np.uint64)
        if e:
            m0, m1 = (a.view(np.uint64).reshape(e, m, 2) for a in self.ot.random_ot(e * m))
            msg = self.channel.recv()
            if len(msg) != 1 or msg[0].dtype != np.uint8 or msg[0].shape != ((e * m + 7) // 8,):
                raise self._bad(
                    f"expected the packed choice corrections of {e * m} OTs, got "
                    f"{[(str(a.dtype), a.shape) for a in msg]}"
                )
            flip = np.unpackbits(msg[0], count=e * m, bitorder="little").reshape(e, m, 1)
            np.bitwise_xor(m0, m1, out=d)
            np.bitwise_and(d, -flip.astype(np.uint64), out=zero[g:])
            zero[g:] ^= m0  # m_(c ^ r)
            d ^= self._delta
        tables, out0 = garble(circuit, zero, self._delta, self._hash, offset)
        mine = zero[:g] ^ (self._delta & -x.astype(np.uint64)[..., None])
        k = 0 if weights is None else len(weights)
        head = np.array([m, circuit.n_and, g, e, offset, k], dtype=np.int64)
        key = np.frombuffer(self._hash.key, dtype=np.uint8)
        if weights is None:
            self.channel.send([head, key, mine, d, tables, np.empty((0, m, 2), np.int64)])
            return permute_bits(out0)
        masks = self._prg.ring((k, m))
        trans = translate(out0, self._delta, self._hash, weights, masks, circuit.n_and, offset)
        self.channel.send([head, key, mine, d, tables, trans])
        return -masks.sum(axis=0)

    def _offer(self, circuit: Circuit, c: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        e, m = len(circuit.evaluator_inputs), hi - lo
        if not e:
            return c[:, lo:hi], np.empty((0, m, 2), dtype=np.uint64)
        r, mr = self.ot.random_ot(e * m)
        mine = c[:, lo:hi]
        self.channel.send([np.packbits(mine.reshape(-1) ^ r, bitorder="little")])
        return mine, mr.view(np.uint64).reshape(e, m, 2)

    def _evaluate_chunk(
        self,
        circuit: Circuit,
        pending: tuple[np.ndarray, np.ndarray],
        offset: int,
        weights: np.ndarray | None,
    ) -> np.ndarray:
        c, mr = pending
        g, e, m = len(circuit.garbler_inputs), len(circuit.evaluator_inputs), c.shape[1]
        msg = self.channel.recv()
        k = 0 if weights is None else len(weights)
        want = np.array([m, circuit.n_and, g, e, offset, k], dtype=np.int64)
        if len(msg) != 6 or msg[0].dtype != np.int64 or msg[0].shape != (6,):
            raise self._bad(
                "expected a header, a key, labels, corrections, tables and output translations; "
                f"got {len(msg)} arrays"
            )
        if not np.array_equal(msg[0], want):
            raise self._bad(
                f"the garbler sends {msg[0].tolist()} (instances, AND gates, garbler bits, evaluator "
                f"bits, first instance, translated outputs), this party expects {want.tolist()}"
            )
        key, theirs, d, tables, trans = msg[1:]
        for name, arr, dtype, shape in (
            ("key", key, np.uint8, (16,)),
            ("garbler labels", theirs, np.uint64, (g, m, 2)),
            ("label corrections", d, np.uint64, (e, m, 2)),
            ("tables", tables, np.uint64, (circuit.n_and, 2, m, 2)),
            ("output translations", trans, np.int64, (k, m, 2)),
        ):
            if arr.dtype != dtype or arr.shape != shape:
                raise self._bad(
                    f"malformed {name}: expected {np.dtype(dtype)} {shape}, got {arr.dtype} {arr.shape}"
                )
        if self._hash is None or self._hash.key != key.tobytes():
            self._hash = GarbleHash(key.tobytes())
        labels = np.empty((g + e, m, 2), dtype=np.uint64)
        labels[:g] = theirs
        np.bitwise_and(d, -c.astype(np.uint64)[..., None], out=labels[g:])
        labels[g:] ^= mr
        out = evaluate(circuit, labels, tables, self._hash, offset)
        if weights is None:
            return permute_bits(out)
        return read_translation(out, trans, self._hash, circuit.n_and, offset).sum(axis=0)

    # -- outputs to arithmetic shares ---------------------------------------------------------
    def to_arith(self, shares: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Additive shares in Z_2^64 (int64 ``(n,)``) of ``sum_i weights[i] * b_i`` for output
        bits ``b_i`` XOR-shared as :meth:`run` leaves them (uint8 ``(k, n)``)."""
        s = _bits(f"arithmetic conversion ({self.role} side)", shares, len(weights))
        w = np.asarray(weights, dtype=np.int64)
        k, n = s.shape
        own = (w[:, None] * s.astype(np.int64)).sum(axis=0)
        if self.role == GARBLER:
            x0 = self.ot.cot_send(k * n, (2 * w[:, None] * s).reshape(-1, 1).astype(np.int64))
            return own + x0.reshape(k, n).sum(axis=0)
        y = self.ot.cot_recv(s.reshape(-1), 1)
        return own - y.reshape(k, n).sum(axis=0)


def signed_weights(width: int) -> np.ndarray:
    """Weights of a two's-complement word: ``2^i``, the top bit ``-2^(width-1)`` (int64)."""
    if not 1 <= width <= 64:
        raise ShapeError(f"garbled circuits: a word has 1..64 bits, got {width}")
    w = (np.uint64(1) << np.arange(width, dtype=np.uint64)).view(np.int64).copy()
    w[-1] = -w[-1]
    return w
