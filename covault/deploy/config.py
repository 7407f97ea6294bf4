"""Consortium configuration: one TOML file, the same on every host.

```toml
protocol = "rep3"            # or "2pc" (covault.schemes)
provider = "dealer"          # 2pc only: correlated-randomness provider (default "dealer")
dealer = "d"                 # 2pc with provider "dealer": the party that deals correlated randomness
timeout = 30                 # seconds without progress from a peer before giving up
frac_bits = 16               # optional
[tls]
certs = "certs"              # ca.pem, NAME.pem, NAME.key [, revoked.crl.pem] (relative to this file)
# plaintext = true           # disables TLS: only for experiments, warns loudly
[parties.a]
address = "127.0.0.1:7001"
region = "EU"                # optional label of where the party is (data owners' policies name regions)
```

Protocols and providers are looked up by name in :mod:`covault.schemes` and
:mod:`covault.randomness.providers`; a dealer party is named exactly where the provider needs one.
Parties that are neither compute parties nor the dealer are *data parties*
(:mod:`covault.protocols.bystander`): they own inputs and may receive revealed values, but hold
no shares. Unknown keys, bad values, a party without an address (where one is needed) and missing
certificates raise :class:`ConfigError` naming the key or party. Later layers (jobs) extend the
accepted keys through ``extra_keys`` / ``extra_party_keys``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covault import schemes
from covault.deploy.certs import CertificateError, check_name, check_party_files
from covault.deploy.revocation import party_watch
from covault.errors import CovaultError, ProtocolError
from covault.randomness.providers import choose, dealer_protocols

TOP_KEYS = {"protocol", "provider", "dealer", "timeout", "frac_bits", "tls", "parties", "compute"}
TLS_KEYS = {"certs", "plaintext"}
PARTY_KEYS = {"address", "region"}


class ConfigError(CovaultError, ValueError):
    """The consortium configuration is invalid; the message names the key or party."""


@dataclass(frozen=True)
class PartyConfig:
    name: str
    host: str | None
    port: int | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str | None:
        return None if self.host is None else f"{self.host}:{self.port}"

    @property
    def region(self) -> str | None:
        """The party's region label (``region = "EU"``), None where the config gives none."""
        return self.options.get("region")


@dataclass(frozen=True)
class ConsortiumConfig:
    path: Path | None
    protocol: str
    dealer: str | None
    compute: tuple[str, ...]
    timeout: float
    frac_bits: int
    certs: Path | None
    plaintext: bool
    parties: dict[str, PartyConfig]
    options: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None  # the correlated-randomness provider (None: the scheme takes none)

    @property
    def data(self) -> tuple[str, ...]:
        """The data parties: neither compute parties nor the dealer, in file order."""
        return tuple(p for p in self.parties if p not in self.compute and p != self.dealer)

    @property
    def names(self) -> tuple[str, ...]:
        """Every party in session order: compute parties, then the dealer, then the data parties."""
        return (*self.compute, *([self.dealer] if self.dealer else []), *self.data)

    def require_addresses(self) -> None:
        for p in self.parties.values():
            if p.host is None:
                raise ConfigError(
                    f"party {p.name!r} has no address (set [parties.{p.name}] address = 'host:port')"
                )

    def require_certificates(self, party: str | None = None) -> None:
        """Check the TLS files of ``party`` in ``[tls] certs``: ``ca.pem``, ``NAME.pem``,
        ``NAME.key`` and the revocation list if present (a party's folder needs no other party's
        files); with no ``party``, those of every party (a folder made by ``covault certs issue``
        for local tests). ConfigError naming the party and the file."""
        if self.plaintext:
            return
        if self.certs is None:
            raise ConfigError("missing [tls] certs = 'DIR' (or plaintext = true to run without TLS)")
        if party is not None and party not in self.parties:
            raise ConfigError(f"party {party!r} is not in the config (parties: {sorted(self.parties)})")
        for name in self.names if party is None else (party,):
            try:
                party_watch(self.certs, name, check_party_files(self.certs, name))
            except CertificateError as e:
                raise ConfigError(str(e)) from None


def _parse_address(party: str, value: Any) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"party {party!r}: address must be 'host:port', got {value!r}")
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"party {party!r}: bad port in address {value!r}") from None
    if not host or not 0 < port < 65536:
        raise ConfigError(f"party {party!r}: bad address {value!r} (port must be 1-65535)")
    return host, port


def _unknown(keys: Iterable[str], allowed: set[str], where: str) -> None:
    bad = sorted(set(keys) - allowed)
    if bad:
        raise ConfigError(f"unknown key {bad[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})")


def parse_config(
    raw: dict[str, Any],
    path: Path | None = None,
    *,
    extra_keys: Iterable[str] = (),
    extra_party_keys: Iterable[str] = (),
) -> ConsortiumConfig:
    """Validate a parsed TOML document (see module docstring)."""
    extra_keys, extra_party_keys = set(extra_keys), set(extra_party_keys)
    _unknown(raw, TOP_KEYS | extra_keys, "the top level")
    protocol = raw.get("protocol", schemes.DEFAULT)
    if not isinstance(protocol, str) or protocol not in schemes.SCHEMES:
        raise ConfigError(f"protocol must be one of {list(schemes.names())}, got {protocol!r}")
    try:
        entry = choose(protocol, raw.get("provider"))
    except ProtocolError as exc:
        raise ConfigError(f"provider: {exc}") from None
    provider = None if entry is None else entry.name
    timeout = raw.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    frac_bits = raw.get("frac_bits", 16)
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or not 0 <= frac_bits <= 30:
        raise ConfigError(f"frac_bits must be an integer in [0, 30], got {frac_bits!r}")
    parties_raw = raw.get("parties")
    if not isinstance(parties_raw, dict) or not parties_raw:
        raise ConfigError("no parties: add a [parties.NAME] table for each party")
    parties: dict[str, PartyConfig] = {}
    for name, table in parties_raw.items():
        try:
            check_name(name)
        except CertificateError as e:
            raise ConfigError(str(e)) from None
        if not isinstance(table, dict):
            raise ConfigError(f"party {name!r}: [parties.{name}] must be a table")
        _unknown(table, PARTY_KEYS | extra_party_keys, f"[parties.{name}]")
        host = port = None
        if "address" in table:
            host, port = _parse_address(name, table["address"])
        region = table.get("region")
        if region is not None and (not isinstance(region, str) or not region.strip()):
            raise ConfigError(
                f"party {name!r}: region must be a non-empty label such as 'EU', got {region!r}"
            )
        options = {k: v for k, v in table.items() if k != "address"}
        parties[name] = PartyConfig(name, host, port, options)
    dealer = raw.get("dealer")
    if entry is not None and entry.needs_dealer:
        if dealer is None:
            raise ConfigError(
                f"protocol {protocol!r} with provider {provider!r} needs dealer = 'NAME' naming one of the parties"
            )
        if dealer not in parties:
            raise ConfigError(f"dealer {dealer!r} is not one of the parties {sorted(parties)}")
    elif dealer is not None:
        if entry is None:
            raise ConfigError(
                f"key 'dealer' is only used with protocol = {' or '.join(map(repr, dealer_protocols()))}"
            )
        raise ConfigError(f"key 'dealer' is not used with provider {provider!r}, which needs no dealer")
    need = schemes.get(protocol).parties
    candidates = [p for p in parties if p != dealer]
    compute = raw.get("compute")
    if compute is None:
        compute = candidates[:need]
    if not isinstance(compute, list | tuple) or any(not isinstance(c, str) for c in compute):
        raise ConfigError(f"compute must be a list of party names, got {compute!r}")
    for c in compute:
        if c not in parties:
            raise ConfigError(f"compute party {c!r} is not one of the parties {sorted(parties)}")
        if c == dealer:
            raise ConfigError(f"party {c!r} cannot be both the dealer and a compute party")
    if len(compute) != need or len(set(compute)) != need:
        raise ConfigError(
            f"protocol {protocol!r} needs exactly {need} distinct compute parties, got {list(compute)}"
        )
    tls = raw.get("tls", {})
    if not isinstance(tls, dict):
        raise ConfigError("[tls] must be a table")
    _unknown(tls, TLS_KEYS, "[tls]")
    plaintext = tls.get("plaintext", False)
    if not isinstance(plaintext, bool):
        raise ConfigError(f"[tls] plaintext must be true or false, got {plaintext!r}")
    certs = None
    if "certs" in tls:
        if not isinstance(tls["certs"], str):
            raise ConfigError(f"[tls] certs must be a directory path, got {tls['certs']!r}")
        certs = Path(tls["certs"])
        if path is not None and not certs.is_absolute():
            certs = path.parent / certs
    options = {k: v for k, v in raw.items() if k in extra_keys}
    return ConsortiumConfig(
        path, protocol, dealer, tuple(compute), float(timeout), frac_bits, certs, plaintext, parties, options,
        provider,
    )  # fmt: skip


def read_toml(path: str | Path, what: str = "config file", error: type[Exception] = ConfigError) -> dict:
    """Parse a UTF-8 TOML file (a leading byte-order mark is allowed). A missing, unreadable or
    non-UTF-8 file, a directory, or bad syntax raises ``error`` naming the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {p} not found") from None
    except IsADirectoryError:
        raise error(f"{what} {p} is a directory, not a file") from None
    except PermissionError:
        raise error(f"{what} {p} cannot be read: permission denied") from None
    except OSError as e:
        raise error(f"{what} {p} cannot be read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(
            f"{what} {p} is not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}); "
            "TOML files must be saved as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{p}: invalid TOML: {e}") from None


def load_config(path: str | Path, **kw: Any) -> ConsortiumConfig:
    """Read and validate a consortium TOML file."""
    return parse_config(read_toml(path), Path(path), **kw)
