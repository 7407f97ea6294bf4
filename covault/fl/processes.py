"""A star of OS processes over mutual TLS: one aggregator, each client connected to it alone.

Steps of :func:`run_star` (the launcher of :mod:`covault.launch.processes`, with a star instead
of a full mesh: clients of federated learning talk only to the aggregator):

1. throw-away certificates: a fresh CA and one certificate per party in a temporary directory,
   the CA key deleted at once (:func:`covault.transport.tls.throwaway_certificates`);
2. one ``spawn`` process per party; each loads its TLS identity, binds a loopback listener and
   reports its port;
3. a random 16-byte session id and the address map go to every process; each client dials the
   aggregator, which accepts every client (:func:`covault.transport.tcp.connect_mesh` with the
   order ``(client, aggregator)`` at a client and ``(clients..., aggregator)`` at the
   aggregator): mutual TLS 1.3, certificates naming the party, session-bound frames;
4. each runs ``program(name, network, args)`` over a :class:`covault.transport.base.Network`
   (bytes and rounds counted) and reports its return value or error; a client may close its
   connection early (a dropout); the aggregator sees a :class:`~covault.errors.PeerError`
   naming it;
5. every process exits or is stopped (:func:`covault.launch.supervisor.stop`); the root cause of a
   failure is re-raised naming its party.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from covault.errors import CovaultError
from covault.launch.processes import _check_program, _describe, party_start, supervise, tune_process
from covault.transport.base import Network
from covault.transport.tcp import LateJoinGuard, TcpTransport, connect_mesh
from covault.transport.tls import throwaway_certificates


def _star_main(
    conn: Connection,
    name: str,
    hub: str,
    clients: tuple[str, ...],
    program_bytes: bytes,
    args: Any,
    certs: str,
    timeout: float,
) -> None:
    """Body of one process of the star."""
    started = party_start(conn, name, program_bytes, certs)
    if started is None:
        return
    program, tls, listener, addresses, session_id = started
    tune_process(os.cpu_count() or 1)  # one thread each: the clients share the cores
    order = (*clients, hub) if name == hub else (name, hub)
    try:
        guard = LateJoinGuard()
        channels = connect_mesh(name, order, listener, addresses, session_id, timeout, tls=tls, guard=guard)
        transport = TcpTransport(name, channels, on_close=guard.stop)
        try:
            result = program(name, Network(transport, timeout=timeout), args)
        except BaseException as exc:
            transport.abort(f"{type(exc).__name__}: {exc}")
            raise
        transport.close(linger=timeout)
        conn.send(("result", result))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", _describe(exc)))
    finally:
        listener.close()


def run_star(
    program: Callable[[str, Network, Any], Any],
    hub: str,
    clients: Sequence[str],
    args: dict[str, Any],
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Run ``program(name, network, args[name])`` in one process per party; ``{party: result}``."""
    program_bytes = _check_program(program)
    clients = tuple(clients)
    order = (*clients, hub)
    if len(set(order)) != len(order):
        raise CovaultError(f"party names must be distinct, got {list(order)}")
    with throwaway_certificates(order) as certs:
        return supervise(
            order,
            _star_main,
            lambda name: (name, hub, clients, program_bytes, args[name], str(certs), float(timeout)),
            timeout,
        )
