"""``covault.run``: start every party of a computation and collect their results."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from covault import ring
from covault.errors import CovaultError, PartyError, PeerError, ProtocolError
from covault.session import PROTOCOLS, Session
from covault.transport.base import Network
from covault.transport.local import LocalHub

DEFAULT_DEALER = "dealer"


def party_names(parties: int | Sequence[str], protocol: str) -> tuple[tuple[str, ...], str | None]:
    """Compute-party names and the dealer name (2pc only) for ``covault.run``."""
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    need = 2 if protocol == "2pc" else 3
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
    dealer = None
    if protocol == "2pc":
        dealer = DEFAULT_DEALER
        if dealer in names:
            raise PartyError(f"{dealer!r} is reserved for the 2pc dealer party")
    return names, dealer


def run(
    program: Callable[[Session], Any],
    parties: int | Sequence[str] = 3,
    protocol: str = "rep3",
    transport: str = "local",
    *,
    frac_bits: int = 16,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Run ``program(session)`` at every party (SPMD) and return ``{party: return value}``.

    ``parties`` counts (or names) the compute parties; for ``2pc`` a dealer party named
    ``"dealer"`` is added. ``transport="local"`` runs parties as threads of this process;
    ``"tcp"`` runs each in its own OS process over loopback sockets. If any party fails, the
    others stop with a :class:`~covault.errors.PeerError` and the first root-cause exception is
    re-raised here, annotated with the party that raised it.
    """
    compute, dealer = party_names(parties, protocol)
    everyone = (*compute, dealer) if dealer else compute
    if transport == "local":
        return _run_local(program, compute, dealer, everyone, protocol, frac_bits, timeout)
    if transport == "tcp":
        from covault.transport.launch import run_processes

        return run_processes(program, compute, dealer, protocol, frac_bits, timeout)
    raise CovaultError(f"unknown transport {transport!r}; choose 'local' or 'tcp'")


def _run_local(program, compute, dealer, everyone, protocol, frac_bits, timeout):
    hub = LocalHub(everyone)
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    order: list[str] = []
    lock = threading.Lock()

    def body(name: str) -> None:
        try:
            with ring.wrapping():
                net = Network(hub.transport(name), timeout=timeout)
                session = Session(name, compute, protocol, net, dealer=dealer, frac_bits=frac_bits)
                results[name] = program(session)
        except BaseException as exc:  # reported to the caller below
            with lock:
                errors[name] = exc
                order.append(name)
            hub.abort(name, f"{type(exc).__name__}: {exc}")

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
