"""The server of one SecAgg+ round: routes keys and shares, sums masked inputs, unmasks the sum
(Bell et al., CCS 2020, over Bonawitz et al., CCS 2017; 4 rounds, each one message from and one
to every client still there: per client the server receives what :mod:`covault.fl.client`
sends and sends back ``68 k + 176 k + 4 k + 8`` bytes).

Steps (one method per round; each takes ``{client id: message}`` from the clients that answered
and returns ``{client id: message}`` for the next round; a client that did not answer dropped):

1. :meth:`Server.receive_keys`: each client's two public keys; send each client those of its
   graph neighbours that answered.
2. :meth:`Server.receive_shares`: each client's encrypted shares, one per neighbour; forward to
   every client that answered the ciphertexts addressed to it by clients that answered.
3. :meth:`Server.receive_masked`: the masked inputs ``y_u``, summed in Z_2^b; ask each survivor
   for its shares: of ``b_v`` for neighbours that sent ``y``, of ``s_sk_v`` for those that
   reached round 2 but did not (dropped "after sharing").
4. :meth:`Server.finish`: from the answers (clients may drop here too: their ``y`` stays in the
   sum), reconstruct each survivor's ``b_v`` and subtract ``PRG(b_v)``; reconstruct each dropped
   client's ``s_sk_v`` (checked against its public key) and remove the pairwise masks its
   surviving neighbours added for it. The result is the sum of the survivors' ``x`` in Z_2^b.

What the server learns (semi-honest): the sum of the survivors' updates, which clients dropped
and when, and the public keys; everything else it sees is uniformly distributed (masked inputs)
or encrypted. Fewer than ``t`` clients at any round, or fewer than ``t`` shares of a needed
secret, raise :class:`~covault.fl.errors.TooFewSurvivorsError` naming the round and the count;
a message that does not parse or fit the round raises
:class:`~covault.fl.errors.MalformedMessageError` naming its client. Cost at the server: ``n``
masked inputs summed, ``|survivors|`` self-mask and ``sum over dropped of their surviving
neighbours`` pairwise-mask expansions, ``n`` Shamir reconstructions of ``t`` shares.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from covault.fl import masking, shamir, wire
from covault.fl.config import RoundConfig
from covault.fl.errors import SecAggError, malformed, too_few
from covault.fl.graph import neighbours
from covault.fl.keys import MASK_LABEL, KeyPair
from covault.randomness.prg import SEED_BYTES

STAGES = {
    1: "round 1 (advertise keys)",
    2: "round 2 (share keys)",
    3: "round 3 (masked input)",
    4: "round 4 (unmasking)",
}


class Server:
    """The aggregator of one round; ``survivors`` and ``dropped`` are known after round 4."""

    def __init__(self, config: RoundConfig):
        self.config = config
        self.graph = neighbours(config.clients, config.neighbours, config.seed)
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.sent_to: dict[int, set[int]] = {}  # u -> the neighbours u sent shares to
        self.held: dict[int, set[int]] = {}  # v -> the clients whose shares v holds
        self.total: np.ndarray | None = None
        self.survivors: list[int] = []
        self.dropped: list[int] = []
        self.stage = 0

    def _begin(self, stage: int, messages: Mapping[int, bytes], expected: set[int]) -> None:
        if self.stage != stage - 1:
            raise SecAggError(f"secure aggregation server: {STAGES[stage]} after round {self.stage}")
        self.stage = stage
        for u, m in messages.items():
            if u not in expected:
                raise malformed(STAGES[stage], u, "not expected in this round")
            if not isinstance(m, bytes | bytearray):
                raise malformed(STAGES[stage], u, f"expected bytes, got {type(m).__name__}")
        if len(messages) < self.config.threshold:
            raise too_few(STAGES[stage], len(messages), self.config.threshold)

    def _parse(self, stage: int, u: int, fn, *args):
        try:
            return fn(*args)
        except ValueError as exc:
            raise malformed(STAGES[stage], u, str(exc)) from None

    def receive_keys(self, messages: Mapping[int, bytes]) -> dict[int, bytes]:
        self._begin(1, messages, set(range(self.config.clients)))
        self.keys = {u: self._parse(1, u, wire.parse_keys, m) for u, m in messages.items()}
        return {
            u: wire.neighbour_keys({v: self.keys[v] for v in self.graph[u] if v in self.keys})
            for u in self.keys
        }

    def receive_shares(self, messages: Mapping[int, bytes]) -> dict[int, bytes]:
        self._begin(2, messages, set(self.keys))
        boxes = {}
        for u, m in messages.items():
            boxes[u] = self._parse(2, u, wire.parse_envelopes, m)
            want = {v for v in self.graph[u] if v in self.keys}
            if set(boxes[u]) != want:
                raise malformed(
                    STAGES[2], u, f"shares for {sorted(boxes[u])}, expected its neighbours {sorted(want)}"
                )
        out = {}
        for v in boxes:
            got = {u: b[v] for u, b in boxes.items() if v in b}
            self.held[v] = set(got)
            out[v] = wire.envelopes(got)
        return out

    def receive_masked(self, messages: Mapping[int, bytes]) -> dict[int, bytes]:
        self._begin(3, messages, set(self.held))
        cfg = self.config
        total = np.zeros(cfg.dim, dtype=cfg.dtype)
        for u, m in messages.items():
            np.add(total, self._parse(3, u, wire.parse_masked, m, cfg.dim, cfg.dtype), out=total)
        self.total = total
        self.survivors = sorted(messages)
        self.dropped = sorted(set(self.held) - set(messages))
        alive = set(messages)
        return {
            v: wire.unmask_request(sorted(self.held[v] & alive), sorted(self.held[v] - alive))
            for v in messages
        }

    def finish(self, messages: Mapping[int, bytes]) -> np.ndarray:
        """The sum of the survivors' updates in Z_2^b (``uint32`` or ``uint64``)."""
        self._begin(4, messages, set(self.survivors))
        alive = set(self.survivors)
        b_shares: dict[int, dict[int, int]] = {u: {} for u in self.survivors}
        sk_shares: dict[int, dict[int, int]] = {u: {} for u in self.dropped}
        for v, m in messages.items():
            for u, kind, share in self._parse(4, v, wire.parse_unmask_shares, m):
                if u not in self.held[v] or (kind == wire.SELF) != (u in alive):
                    raise malformed(STAGES[4], v, f"an unrequested share of client {u}")
                (b_shares if kind == wire.SELF else sk_shares)[u][v + 1] = share
        cfg, total = self.config, self.total
        for u, shares in b_shares.items():
            b = self._recover(u, shares, "self-mask seed", SEED_BYTES)
            np.subtract(total, masking.expand(b, cfg.dim, cfg.dtype), out=total)
        for u, shares in sk_shares.items():
            s = KeyPair.from_private_bytes(self._recover(u, shares, "mask key", 32))
            if s.public != self.keys[u][1]:
                raise SecAggError(
                    f"secure aggregation, {STAGES[4]}: client {u}'s reconstructed key does not match its public key"
                )
            for v in self.survivors:
                if u in self.held[v]:  # v masked with u: remove d_vu PRG(s_vu), i.e. add d_uv PRG(s_uv)
                    seed = s.derive(self.keys[v][1], MASK_LABEL, cfg.round_id, u, v, SEED_BYTES)
                    masking.add_pairwise(total, u, v, seed)
        self.stage = 5
        return total

    def _recover(self, u: int, shares: dict[int, int], what: str, size: int) -> bytes:
        t = self.config.threshold
        if len(shares) < t:
            raise too_few(STAGES[4], len(shares), t, f"shares of client {u}'s {what} arrived")
        value = shamir.reconstruct(shares, t, f"client {u}'s {what}")
        if value >= 1 << (8 * size):
            raise SecAggError(
                f"secure aggregation, {STAGES[4]}: client {u}'s {what} does not reconstruct (inconsistent shares)"
            )
        return value.to_bytes(size, "little")
