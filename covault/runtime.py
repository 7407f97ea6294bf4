"""``covault.run``: start every party of a computation and collect their results; and
:func:`config_session` / :func:`run_party`: one party of a consortium run from its config."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from covault import ring, schemes
from covault.errors import CovaultError, PartyError, PeerError
from covault.randomness.providers import needs_dealer
from covault.session import Session
from covault.transport.base import Network
from covault.transport.local import LocalHub
from covault.transport.transcript import TranscriptWriter
from covault.transport.transcript import transcript_dir as resolve_transcript_dir

DEFAULT_DEALER = "dealer"


def party_names(
    parties: int | Sequence[str], protocol: str, provider: str | None = None
) -> tuple[tuple[str, ...], str | None]:
    """Compute-party names and the dealer name (None where the provider needs no dealer) for
    ``covault.run``; ProtocolError for an unknown protocol or provider."""
    need = schemes.get(protocol).parties
    dealer = DEFAULT_DEALER if needs_dealer(protocol, provider) else None
    if isinstance(parties, int):
        names = tuple(f"p{i}" for i in range(parties))
    else:
        names = tuple(parties)
        if any(not isinstance(n, str) or not n for n in names):
            raise PartyError(f"party names must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise PartyError(f"duplicate party names in {list(names)}")
    if len(names) != need:
        raise PartyError(f"protocol {protocol!r} needs {need} compute parties, got {len(names)}")
    if dealer in names:
        raise PartyError(f"{dealer!r} is reserved for the {protocol} dealer party")
    return names, dealer


def run(
    program: Callable[[Session], Any],
    parties: int | Sequence[str] = 3,
    protocol: str = schemes.DEFAULT,
    transport: str = "local",
    *,
    frac_bits: int = 16,
    timeout: float = 30.0,
    tls: bool = True,
    transcript_dir: str | os.PathLike | None = None,
    data_parties: Sequence[str] = (),
    provider: str | None = None,
) -> dict[str, Any]:
    """Run ``program(session)`` at every party (SPMD) and return ``{party: return value}``.

    ``protocol`` names a scheme of :mod:`covault.schemes` (``"rep3"``, ``"2pc"``); ``provider``
    its correlated-randomness provider (:mod:`covault.randomness.providers`; default: the
    scheme's own, ``"dealer"`` for ``2pc``; a scheme that takes none, like ``rep3``, refuses
    one), seen by the program as ``session.provider_name``.
    ``parties`` counts (or names) the compute parties; where the provider needs a dealer
    (``2pc`` with ``"dealer"``) a dealer party named ``"dealer"`` is added. ``data_parties``
    names further parties that own inputs and may receive revealed values but hold no shares
    (see :mod:`covault.protocols.bystander`); every party sees the parties in the order compute
    parties, dealer, data parties.
    ``transport="local"`` runs parties as threads of this process; ``"tcp"`` runs each party
    (data parties too) in its own OS process over loopback sockets, with mutual TLS 1.3 and
    throw-away certificates unless ``tls=False`` (plaintext, with a loud warning; ``tls`` does
    not apply to ``"local"``, where nothing leaves the process). ``transcript_dir`` (default:
    ``$COVAULT_TRANSCRIPT_DIR`` if set) records every message each party sends in
    ``DIR/NAME.transcript`` (:mod:`covault.transport.transcript`). If any party fails, the
    others stop with a :class:`~covault.errors.PeerError` and the first root-cause exception is
    re-raised here, annotated with the party that raised it.
    """
    compute, dealer = party_names(parties, protocol, provider)
    data = tuple(data_parties)
    for name in data:
        if not isinstance(name, str) or not name or name in compute or name == dealer or data.count(name) > 1:
            raise PartyError(f"data party {name!r} must be a new, unique, non-empty name")
    everyone = (*compute, *((dealer,) if dealer else ()), *data)
    if not isinstance(tls, bool):
        raise CovaultError(f"tls must be True or False, got {tls!r}")
    record = resolve_transcript_dir(transcript_dir)
    if transport == "local":
        return _run_local(
            program, compute, dealer, everyone, protocol, frac_bits, timeout, record, data, provider
        )
    if transport == "tcp":
        from covault.launch.processes import run_processes

        return run_processes(
            program,
            compute,
            dealer,
            protocol,
            frac_bits,
            timeout,
            tls=tls,
            transcript_dir=record,
            data=data,
            provider=provider,
        )
    raise CovaultError(f"unknown transport {transport!r}; choose 'local' or 'tcp'")


def _run_local(
    program, compute, dealer, everyone, protocol, frac_bits, timeout, record=None, data=(), provider=None
):
    hub = LocalHub(everyone)
    options = {"dealer": dealer, "frac_bits": frac_bits, "data_parties": data, "provider": provider}
    session_hex = secrets.token_hex(16)
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    order: list[str] = []
    lock = threading.Lock()

    def body(name: str) -> None:
        writer = None
        try:
            with ring.wrapping():
                net = Network(hub.transport(name), timeout=timeout)
                if record is not None:
                    peers = [p for p in everyone if p != name]
                    info = {"peers": peers, "session": session_hex, "protocol": protocol, "tls": False}
                    writer = TranscriptWriter(record, name, **info).attach(net)
                session = Session(name, compute, protocol, net, **options)
                results[name] = program(session)
        except BaseException as exc:  # reported to the caller below
            with lock:
                errors[name] = exc
                order.append(name)
            hub.abort(name, f"{type(exc).__name__}: {exc}")
        finally:
            if writer is not None:
                writer.close()

    threads = [threading.Thread(target=body, args=(n,), name=f"covault-{n}") for n in everyone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise_first(errors, order)
    return {n: results.get(n) for n in everyone}


def raise_first(errors: dict[str, BaseException], order: list[str]) -> None:
    """Re-raise the root cause: the first failure that is not a consequence (PeerError)."""
    root = next((n for n in order if not isinstance(errors[n], PeerError)), order[0])
    exc = errors[root]
    if not any(f"at party {root!r}" in n for n in getattr(exc, "__notes__", [])):
        exc.add_note(f"raised at party {root!r}")
    raise exc


# -- one party of a consortium -----------------------------------------------------------------------
def agreement_digests(fields: Mapping[str, Any]) -> dict[str, str]:
    """Hex SHA-256 of each field's canonical JSON, keyed by field name: what parties compare."""
    out = {}
    for key, value in fields.items():
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        out[key] = hashlib.sha256(b"covault agreed v1\0" + key.encode() + b"\0" + text.encode()).hexdigest()
    return out


def config_session_id(config, job: str | Mapping[str, Any] = "") -> bytes:
    """The 16-byte session id of a consortium job (a :class:`~covault.transport.tcp.SessionId`):
    SHA-256 of digests of what every party must agree on (protocol, correlation provider, dealer,
    compute parties, the parties in session order, every party's address, fractional bits, TLS on/off) and of the
    job: a name, or a mapping of the job's keys to values or digests
    (:meth:`~covault.jobs.spec.Job.fingerprint_parts`; a key also in the list above replaces it).
    Parties started from different configs, or for different jobs, refuse each other; the id
    carries a short digest per key, so that both name the keys that differ.
    """
    from covault.transport.tcp import DIGEST_BYTES, SessionId

    agreed: dict[str, Any] = {
        "protocol": config.protocol,
        "provider": config.provider,
        "dealer": config.dealer,
        "compute": list(config.compute),
        "parties": list(config.names),
        "frac_bits": config.frac_bits,
        "tls": not config.plaintext,
    }
    agreed.update({f"parties.{n}.address": p.address for n, p in config.parties.items()})
    parts = agreement_digests(agreed)
    parts.update(agreement_digests({"job": job} if isinstance(job, str) else job))
    blob = json.dumps(sorted(parts.items()), separators=(",", ":")).encode()
    digest = hashlib.sha256(b"covault session id v2\0" + blob).digest()[:16]
    return SessionId(digest, {k: bytes.fromhex(v)[:DIGEST_BYTES] for k, v in parts.items()})


@contextlib.contextmanager
def config_session(
    config,
    name: str,
    *,
    job: str | Mapping[str, Any] = "",
    transcript_dir: str | os.PathLike | None = None,
    listener: socket.socket | None = None,
    bind: str | None = None,
) -> Iterator[Session]:
    """Party ``name`` of a consortium (a :class:`~covault.deploy.config.ConsortiumConfig`), as a
    context manager yielding its connected Session.

    ``name`` may be a compute party, the dealer or a data party (a config party that is neither:
    it inputs and receives reveals, see :mod:`covault.protocols.bystander`). Every session has
    the parties in the order ``config.names``: compute parties, dealer, data parties.

    It checks its own certificate (unless ``[tls] plaintext = true``, which warns loudly),
    listens on its configured address (or ``bind`` host / a given ``listener``), connects to
    every peer at its configured address over mutual TLS, retrying until the configured
    timeout, and uses that timeout for every message. Errors name the key, party or peer.
    """
    from covault.deploy.config import ConfigError
    from covault.launch.processes import party_session
    from covault.transport.tcp import open_listener
    from covault.transport.tls import TlsIdentity, warn_plaintext

    order = config.names
    if name not in config.parties:
        raise ConfigError(f"party {name!r} is not in the config (parties: {sorted(config.parties)})")
    config.require_addresses()
    if config.plaintext:
        warn_plaintext(f"party {name!r} (config {config.path}: [tls] plaintext = true)")
        tls = None
    else:
        if config.certs is None:
            raise ConfigError("missing [tls] certs = 'DIR' (or plaintext = true to run without TLS)")
        tls = TlsIdentity.from_dir(config.certs, name)
        tls.context(True)  # load the key now: errors before any connection
        tls.context(False)
    me = config.parties[name]
    if listener is None:
        host = bind if bind is not None else me.host
        try:
            listener = open_listener(host, me.port)
        except OSError as exc:
            raise ConfigError(
                f"party {name!r} cannot listen on {host}:{me.port}: {exc} "
                f"(is [parties.{name}] address an address of this host, and the port free?)"
            ) from None
    addresses = {p: (config.parties[p].host, config.parties[p].port) for p in order}
    session_id = config_session_id(config, job)
    try:
        with party_session(
            name,
            config.compute,
            config.dealer,
            config.protocol,
            config.frac_bits,
            config.timeout,
            listener,
            addresses,
            session_id,
            tls=tls,
            transcript_dir=transcript_dir,
            data=config.data,
            provider=config.provider,
        ) as session:
            yield session
    finally:
        listener.close()


def run_party(config, name: str, program: Callable[[Session], Any], **kw: Any) -> Any:
    """Run ``program(session)`` as party ``name`` of ``config`` (see :func:`config_session`)."""
    with config_session(config, name, **kw) as session:
        return program(session)
