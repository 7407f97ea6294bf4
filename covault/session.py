"""The per-party context a program runs in: who am I, which protocol, which network."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covault import schemes
from covault.encoding import INT_RANGE, FixedPoint
from covault.errors import PartyError, ProtocolError, ShapeError
from covault.protocols.base import Protocol
from covault.protocols.bystander import Bystander
from covault.randomness.providers import choose
from covault.transport.base import Network, Stats


class Session:
    """One party's view of a joint computation.

    Programs receive a Session and use :meth:`input` to bring data in; secret tensors carry it.
    Nothing is global: several sessions (parties, or whole runs) can live in one process.
    ``protocol`` names a scheme of :mod:`covault.schemes`; ``provider`` its correlated-randomness
    provider (:mod:`covault.randomness.providers`; None: the scheme's default, or none for a
    scheme that takes none), kept as :attr:`provider_name`.
    """

    def __init__(
        self,
        party: str,
        compute: Sequence[str],
        protocol: str,
        network: Network,
        *,
        dealer: str | None = None,
        frac_bits: int = 16,
        data_parties: Sequence[str] = (),
        provider: str | None = None,
    ) -> None:
        scheme = schemes.get(protocol)
        entry = choose(protocol, provider)
        if (dealer is not None) != (entry is not None and entry.needs_dealer):
            how = f"protocol {protocol!r}" + (f" with provider {entry.name!r}" if entry else "")
            has = "needs a dealer party" if dealer is None else f"has no dealer party (got dealer={dealer!r})"
            raise ProtocolError(f"{how} {has}")
        self.provider_name = None if entry is None else entry.name
        self.party = party
        self.compute_parties = tuple(compute)
        self.dealer = dealer
        self.data_parties = tuple(data_parties)
        self.parties = (*self.compute_parties, *((dealer,) if dealer else ()), *self.data_parties)
        self.fxp = FixedPoint(frac_bits)
        self.net = network
        self.protocol: Protocol
        if party in self.data_parties:
            self.protocol = Bystander(
                party, self.compute_parties, dealer, network, self.data_parties, scheme=protocol
            )
        else:
            chosen = {} if entry is None else {"provider": entry.name}
            self.protocol = scheme.load()(
                party, self.compute_parties, dealer, network, self.data_parties, **chosen
            )
        self.protocol_name = protocol
        self.protocol.setup()

    def __repr__(self) -> str:
        chosen = f", provider={self.provider_name!r}" if self.provider_name else ""
        return (
            f"Session(party={self.party!r}, protocol={self.protocol_name!r}{chosen}, "
            f"parties={list(self.parties)})"
        )

    @property
    def frac_bits(self) -> int:
        return self.fxp.frac_bits

    @property
    def stats(self) -> Stats:
        """Live communication counters of this party (bytes, messages, rounds)."""
        return self.net.stats

    def scope(self):
        """``with session.scope() as cost:`` — cost of the enclosed block, filled in on exit."""
        return self.net.scope()

    def check_party(self, name: str, role: str = "party") -> None:
        if name not in self.parties:
            raise PartyError(f"unknown {role} {name!r}; parties are {list(self.parties)}")

    def receivers(self, to: str | Sequence[str] | None) -> tuple[str, ...]:
        """Normalise a reveal target: None means every compute party."""
        if to is None:
            return self.compute_parties
        names = (to,) if isinstance(to, str) else tuple(to)
        for n in names:
            self.check_party(n, "reveal receiver")
        return names

    def input(self, value, owner: str, *, integer: bool = False, bound: float | None = None):
        """Secret-share ``value`` held by ``owner``; every other party passes None.

        The owner validates and encodes before anything is sent (NaN/inf and values outside
        the range raise :class:`~covault.errors.EncodingError`); the shape is then announced to
        every party, and the protocol shares the encoded values. With ``integer=True`` the
        values are shared as exact integers (no fractional bits).

        ``bound``: a public magnitude bound ``|v| < bound`` that every party passes alike
        (default: the fixed-point range ``2^(31 - f)`` for reals, ``2^31`` for integers). It
        is checked at the owner and becomes the tensor's ``bound``, from which later steps
        choose their scales (:mod:`covault.bounds`): a tight bound lets sums, means and
        products of large tables stay exact where the default would refuse them.
        """
        from covault.tensor import SecretTensor

        self.check_party(owner, "input owner")
        what = f"input of party {owner!r}"
        if bound is not None:
            self.fxp.check_bound(bound, what, 0 if integer else None)
        if self.party == owner:
            if value is None:
                raise ShapeError(f"party {owner!r} owns this input but passed None")
            if integer:
                enc = self.fxp.encode_int(value, what=what, bound=bound)
            else:
                enc = self.fxp.encode(value, what=what, bound=bound)
            shape = enc.shape
            header = np.array([len(shape), *shape], dtype=np.int64)
            self.net.exchange({p: [header, _bound_word(bound)] for p in self.parties if p != owner})
        else:
            if value is not None:
                raise ProtocolError(
                    f"party {self.party!r} passed a value to an input owned by {owner!r}; "
                    "only the owner passes data, the others pass None"
                )
            header, theirs = self.net.exchange(recv_from=[owner])[owner][:2]
            shape = tuple(int(v) for v in header[1 : 1 + int(header[0])])
            if theirs[0] != _bound_word(bound)[0]:
                owners = "the default" if theirs[0] == 0 else f"bound={theirs.view(np.float64)[0]:g}"
                mine = "the default" if bound is None else f"bound={bound:g}"
                raise ProtocolError(
                    f"input of party {owner!r}: the owner declared {owners} but party {self.party!r} "
                    f"{mine}; every party passes the same bound (scales are chosen from it)"
                )
            enc = None
        shares = self.protocol.share(enc, owner, tuple(shape))
        if bound is None:
            bound = INT_RANGE if integer else self.fxp.max_abs
        return SecretTensor(self, shares, 0 if integer else self.frac_bits, bound)

    def constant(self, value, *, integer: bool = False):
        """A public value as a (trivially shared) secret tensor (range-checked like inputs;
        its bound is its largest magnitude)."""
        from covault.tensor import SecretTensor

        enc = (
            self.fxp.encode_int(value, what="constant")
            if integer
            else self.fxp.encode(value, what="constant")
        )
        shares = self.protocol.add_public(self.protocol.empty(enc.shape), enc)
        frac = 0 if integer else self.frac_bits
        peak = float(np.abs(enc.astype(np.float64)).max(initial=0.0)) / 2.0**frac
        return SecretTensor(self, shares, frac, peak + 2.0**-frac)


def _bound_word(bound: float | None) -> np.ndarray:
    """A declared input bound as one int64 word for the shape header (0: the default)."""
    return np.array([0.0 if bound is None else float(bound)], dtype=np.float64).view(np.int64)
