"""A client of one SecAgg+ round (Bell et al., CCS 2020, over Bonawitz et al., CCS 2017).

Steps (one method per round; each takes the server's message and returns the client's reply):

1. :meth:`Client.advertise`: draw X25519 key pairs ``c`` and ``s``; send both public keys.
2. :meth:`Client.share_keys`: from the server, the public keys of its neighbours that sent
   theirs (the public graph, :mod:`covault.fl.graph`). Draw the self-mask seed ``b`` (16 bytes,
   ``os.urandom``); Shamir-share ``s_sk`` and ``b``, ``t``-of-(neighbours), one share of each
   per neighbour, encrypted under AES-GCM with a key agreed from ``c`` (:mod:`covault.fl.keys`).
3. :meth:`Client.masked_input`: from the server, the encrypted shares of the neighbours that
   reached round 2 (they are the ones it masks with). Send ``y = x + PRG(b) + sum_v d_uv
   PRG(s_uv)`` in Z_2^b (:mod:`covault.fl.masking`).
4. :meth:`Client.unmask`: from the server, which of those neighbours survived (sent ``y``) and
   which dropped. Send its share of ``b_v`` for each survivor ``v`` and of ``s_sk_v`` for each
   dropped one; never both for one client (that would reveal ``x_v``).

Cost per client (k neighbours, d entries of b bits): sent ``64 + 176 k + d b / 8 + 71 k`` bytes,
received ``68 k + 176 k + 4 k + 8`` bytes; 4 rounds; ``2k`` X25519 exchanges and ``k + 1``
AES-CTR expansions of ``d b / 8`` bytes.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from covault.fl import masking, shamir, wire
from covault.fl.config import RoundConfig
from covault.fl.errors import SecAggError
from covault.fl.graph import neighbours
from covault.fl.keys import MASK_LABEL, SHARE_LABEL, KeyPair, decrypt, encrypt
from covault.randomness.prg import SEED_BYTES


class Client:
    """Client ``cid`` with its ring vector ``x`` (from :class:`~covault.fl.quantise.Quantiser`)."""

    def __init__(self, cid: int, x: np.ndarray, config: RoundConfig):
        x = np.asarray(x)
        if x.shape != (config.dim,) or x.dtype != config.dtype:
            raise SecAggError(
                f"client {cid}: the update must be {config.dim} words of {np.dtype(config.dtype).name}, "
                f"got shape {x.shape} of {x.dtype}"
            )
        self.cid, self.x, self.config = cid, x, config
        self.graph_neighbours = set(neighbours(config.clients, config.neighbours, config.seed)[cid])
        self.c, self.s = KeyPair(), KeyPair()
        self.peer_keys: dict[int, tuple[bytes, bytes]] = {}
        self.held: dict[int, tuple[int, int]] = {}  # neighbour -> (share of its s_sk, share of its b)
        self.box_keys: dict[int, bytes] = {}  # neighbour -> AES-GCM key (the same both ways)
        self.stage = 0

    def _advance(self, stage: int) -> None:
        if self.stage != stage - 1:
            raise SecAggError(f"client {self.cid}: round {stage} requested after round {self.stage}")
        self.stage = stage

    def _parse(self, what: str, fn, *args):
        try:
            return fn(*args)
        except ValueError as exc:
            raise SecAggError(f"client {self.cid}: malformed {what} from the server: {exc}") from None

    def advertise(self) -> bytes:
        """Round 1: the two public keys."""
        self._advance(1)
        return wire.keys(self.c.public, self.s.public)

    def share_keys(self, message: bytes) -> bytes:
        """Round 2: encrypted shares of ``s_sk`` and ``b`` for each neighbour that advertised."""
        self._advance(2)
        keys = self._parse("neighbour keys", wire.parse_neighbour_keys, message)
        stray = set(keys) - self.graph_neighbours
        if stray:
            raise SecAggError(f"client {self.cid}: the server sent keys of non-neighbours {sorted(stray)}")
        t = self.config.threshold
        if len(keys) < t:
            raise SecAggError(
                f"client {self.cid}, round 2 (share keys): only {len(keys)} neighbours left, fewer than t = {t}"
            )
        self.peer_keys = keys
        self.b = os.urandom(SEED_BYTES)
        points = [v + 1 for v in sorted(keys)]
        sk_shares = shamir.split(int.from_bytes(self.s.private_bytes(), "little"), t, points)
        b_shares = shamir.split(int.from_bytes(self.b, "little"), t, points)
        rid, u = self.config.round_id, self.cid
        out = {}
        for v, (c_pk, _) in keys.items():
            key = self.box_keys[v] = self.c.derive(c_pk, SHARE_LABEL, rid, u, v, 32)
            plain = wire.share_plaintext(u, v, sk_shares[v + 1], b_shares[v + 1])
            out[v] = encrypt(key, plain, rid + struct.pack("<II", u, v))
        return wire.envelopes(out)

    def masked_input(self, message: bytes) -> bytes:
        """Round 3: the masked update, masked with the neighbours whose shares arrived."""
        self._advance(3)
        boxes = self._parse("forwarded shares", wire.parse_envelopes, message)
        stray = set(boxes) - set(self.peer_keys)
        if stray:
            raise SecAggError(
                f"client {self.cid}: the server forwarded shares from unknown clients {sorted(stray)}"
            )
        rid, me = self.config.round_id, self.cid
        for w, blob in boxes.items():
            key = self.box_keys[w]
            plain = decrypt(key, blob, rid + struct.pack("<II", w, me), f"client {w} (at client {me})")
            u, v, sk_share, b_share = self._parse("shares", wire.parse_share_plaintext, plain)
            if (u, v) != (w, me):
                raise SecAggError(f"client {me}: the shares from client {w} are addressed from {u} to {v}")
            self.held[w] = (sk_share, b_share)
        y = self.x + masking.expand(self.b, self.config.dim, self.config.dtype)
        for w in self.held:
            seed = self.s.derive(self.peer_keys[w][1], MASK_LABEL, rid, me, w, SEED_BYTES)
            masking.add_pairwise(y, me, w, seed)
        return wire.masked(y)

    def unmask(self, message: bytes) -> bytes:
        """Round 4: shares of the survivors' self-mask seeds and of the dropped clients' keys."""
        self._advance(4)
        survivors, dropped = self._parse("unmask request", wire.parse_unmask_request, message)
        s, d = set(survivors), set(dropped)
        if s & d:
            raise SecAggError(
                f"client {self.cid}: the server asks for both shares of clients {sorted(s & d)} "
                "(that would reveal their updates); refused"
            )
        unknown = (s | d) - set(self.held)
        if unknown:
            raise SecAggError(
                f"client {self.cid}: the server asks for shares it does not hold: {sorted(unknown)}"
            )
        items = [(v, wire.SELF, self.held[v][1]) for v in sorted(s)]
        items += [(v, wire.SECRET_KEY, self.held[v][0]) for v in sorted(d)]
        return wire.unmask_shares(items)
