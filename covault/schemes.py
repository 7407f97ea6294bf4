"""The secret-sharing schemes covault runs, by name: the one place their names and facts live.

Every layer that needs a scheme's facts (number of compute parties, the correlation providers it
runs with, its implementation class) looks them up here; the class itself is imported only when
:meth:`Scheme.load` is called (by the runtime), so that low layers (deployment files) can read the
facts without importing the protocols. Whether a scheme needs a dealer party is a fact of its
correlation provider (:mod:`covault.randomness.providers`), not of the scheme.

To add a scheme: implement :class:`covault.protocols.base.Protocol`, add a :class:`Scheme` to
:data:`SCHEMES`, and give the oblivious shuffle (:mod:`covault.ops.shuffle`) its case;
data parties' inputs (:mod:`covault.protocols.bystander`) follow from the share layout.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from covault.errors import ProtocolError


@dataclass(frozen=True)
class Scheme:
    """One secret-sharing scheme.

    ``parties``: its number of compute parties; ``components``: ring components each compute
    party's share holds (party ``i`` holds components ``i, i+1, ...`` mod ``parties``);
    ``providers``: the correlation providers it runs with, its default first (empty: it takes
    none); ``impl``: the dotted path of its :class:`~covault.protocols.base.Protocol` class.
    """

    name: str
    parties: int
    components: int
    providers: tuple[str, ...]
    description: str
    impl: str

    @property
    def default_provider(self) -> str | None:
        """The provider used when none is named (None: the scheme takes none)."""
        return self.providers[0] if self.providers else None

    def load(self) -> type:
        """The implementation class (imported on first use)."""
        return load_class(self.impl)


def load_class(path: str) -> type:
    """The class at dotted ``path`` (``package.module.Class``), importing its module."""
    module, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(module), cls)


SCHEMES: Mapping[str, Scheme] = MappingProxyType(
    {
        "rep3": Scheme(
            "rep3",
            parties=3,
            components=2,
            providers=(),
            description="three compute parties, replicated shares, honest majority, no dealer",
            impl="covault.protocols.replicated.Replicated3PC",
        ),
        "2pc": Scheme(
            "2pc",
            parties=2,
            components=1,
            providers=("dealer", "ot"),
            description="two compute parties, additive shares, correlated randomness from a provider",
            impl="covault.protocols.additive.Additive2PC",
        ),
    }
)

DEFAULT = "rep3"


def names() -> tuple[str, ...]:
    """Every scheme name, in registry order."""
    return tuple(SCHEMES)


def get(name: object) -> Scheme:
    """The scheme called ``name``; :class:`~covault.errors.ProtocolError` naming it and the
    choices if there is none."""
    if not isinstance(name, str) or name not in SCHEMES:
        raise ProtocolError(f"unknown protocol {name!r}; choose one of {sorted(SCHEMES)}")
    return SCHEMES[name]
