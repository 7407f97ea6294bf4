"""Correlated-randomness providers, selectable by name.

:data:`PROVIDERS` names every provider with its facts; which schemes run with which providers is
recorded by the schemes (:attr:`covault.schemes.Scheme.providers`). Whether a computation has a
dealer party is decided here, by :func:`needs_dealer`, from the chosen provider alone.

A provider class implements :class:`~covault.randomness.providers.base.CorrelationProvider` and
is built as ``cls(party, p0, p1, dealer, prg, channel)`` (``dealer`` None where it needs none),
with ``ot=(sender, receiver)``, OT extensions to the other compute party, where it uses OT
(:attr:`Provider.uses_ot`; the protocol above builds them, this layer sits below the OT package).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from covault import schemes
from covault.errors import ProtocolError


@dataclass(frozen=True)
class Provider:
    """One correlated-randomness provider: its name, whether it needs a dealer party, a one-line
    description, the dotted path of its class (imported on first use), whether it is given
    OT extensions to the other compute party, and whether 2pc has an oblivious shuffle with it
    (:mod:`covault.ops.shuffle`: with a dealer party, or by Beneš networks over the OT
    extensions)."""

    name: str
    needs_dealer: bool
    description: str
    impl: str
    uses_ot: bool = False
    shuffle: bool = True

    def load(self) -> type:
        """The provider class (imported on first use)."""
        return schemes.load_class(self.impl)


PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        "dealer": Provider(
            "dealer",
            needs_dealer=True,
            description="a third party deals seed-compressed tuples (it must not collude)",
            impl="covault.randomness.providers.dealer.DealerProvider",
        ),
        "ot": Provider(
            "ot",
            needs_dealer=False,
            description="the two compute parties make every correlation by oblivious transfer (no third party)",
            impl="covault.randomness.providers.ot.OTProvider",
            uses_ot=True,
        ),
    }
)


def choose(protocol: str, provider: object = None) -> Provider | None:
    """The provider ``protocol`` runs with: ``provider`` by name, or the scheme's default if
    None; None for a scheme that takes no provider. :class:`~covault.errors.ProtocolError`
    naming the bad value and the choices for an unknown protocol or provider, a provider the
    scheme does not support, or a provider given to a scheme that takes none."""
    scheme = schemes.get(protocol)
    if not scheme.providers:
        if provider is not None:
            raise ProtocolError(
                f"protocol {protocol!r} takes no correlation provider (got provider={provider!r}); "
                f"providers are for {[s.name for s in schemes.SCHEMES.values() if s.providers]}"
            )
        return None
    name = scheme.default_provider if provider is None else provider
    if not isinstance(name, str) or name not in scheme.providers:
        what = "unknown" if not isinstance(name, str) or name not in PROVIDERS else "unsupported"
        raise ProtocolError(
            f"{what} correlation provider {name!r} for protocol {protocol!r}; "
            f"choose one of {list(scheme.providers)}"
        )
    return PROVIDERS[name]


def needs_dealer(protocol: str, provider: object = None) -> bool:
    """Whether ``protocol`` with ``provider`` (None: its default) has a dealer party."""
    entry = choose(protocol, provider)
    return entry is not None and entry.needs_dealer


def dealer_protocols() -> tuple[str, ...]:
    """The schemes that can run with a dealer party (some provider of theirs needs one)."""
    return tuple(
        s.name for s in schemes.SCHEMES.values() if any(PROVIDERS[p].needs_dealer for p in s.providers)
    )
