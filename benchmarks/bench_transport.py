"""TCP transport cost next to raw sockets, with and without TLS, between two processes on loopback.

Prints, for each mode, the round-trip latency of a tiny message (one int64) and the bulk
throughput of one large message (default 64 MiB) sent one way and acknowledged, plus (covault
only) both sides sending the large message at once and then receiving. Modes:

- ``raw``: the loopback socket with ``sendall``/``recv_into`` of fixed, known sizes: the floor
  any framing adds to;
- ``raw-tls``: the same over Python's ``ssl.SSLSocket`` (mutual TLS 1.3, same certificates and
  settings as covault): what Python's ssl allows;
- ``covault``: :class:`TcpTransport` over plain TCP (framing, event loop, inbox per peer);
- ``covault-tls``: :class:`TcpTransport` over covault's records keyed in mutual TLS 1.3 (:class:`SealedChannel`), as parties run by default.

Then (section ``ops``) the operations that move the most bytes, run by ``covault.run`` over plain
TCP and over TLS (one process per party on loopback): the product of two secret vectors of 1M
values and the sigmoid of 1M values, under 2pc (with its dealer) and rep3. Each run times
``--op-repeat`` operations after a warm-up (the slowest compute party's time per operation);
``--rounds`` runs per transport alternate between TCP and TLS. Printed: the best and median
time per transport, the CPU seconds of all parties' processes per operation, and the TLS/TCP
ratio of the best times (and of the medians).

    python benchmarks/bench_transport.py [--sections micro ops] [--mib 64] [--pings 5000]
        [--repeat 5] [--modes ...] [--ops mul sigmoid] [--protocols 2pc rep3] [--rounds 3]
        [--op-repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import socket
import ssl
import statistics
import threading
import time
import warnings

import numpy as np

import covault
from covault.transport.tcp import HOST, TcpTransport, open_listener, prepare_socket
from covault.transport.tls import TlsIdentity, throwaway_certificates

PEER_A, PEER_B = "a", "b"
MODES = ("raw", "raw-tls", "covault", "covault-tls")


def _connect(mode: str, certs: str, port: int):
    """Client side (the spawned process): a socket, SSLSocket or covault channel."""
    sock = socket.create_connection((HOST, port))
    if mode == "raw-tls":
        prepare_socket(sock)
        return TlsIdentity.from_dir(certs, PEER_B).context(False).wrap_socket(sock)
    tls = TlsIdentity.from_dir(certs, PEER_B) if mode == "covault-tls" else None
    ch = prepare_socket(sock, tls)
    return ch.sock if mode == "raw" else ch


def _accept(mode: str, certs: str, sock: socket.socket):
    """Server side (this process)."""
    if mode == "raw-tls":
        prepare_socket(sock)
        return TlsIdentity.from_dir(certs, PEER_A).context(True).wrap_socket(sock, server_side=True)
    tls = TlsIdentity.from_dir(certs, PEER_A) if mode == "covault-tls" else None
    ch = prepare_socket(sock, tls, server_side=True)
    return ch.sock if mode == "raw" else ch


def _batches(pings: int, n: int = 10) -> list[int]:
    """Round trips per batch: the fastest batch's mean is reported, and the median batch's (the
    machine is shared, and latency depends on whether both ends run on the same core)."""
    return [pings // n] * (n - 1) + [pings - (n - 1) * (pings // n)]


# -- raw sockets -------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, buf: memoryview) -> None:
    pos = 0
    while pos < len(buf):
        n = sock.recv_into(buf[pos:])
        if not n:
            raise ConnectionError("closed")
        pos += n


def _raw_server(mode: str, certs: str, port: int, pings: int, nbytes: int, repeat: int) -> None:
    sock = _connect(mode, certs, port)
    small = memoryview(bytearray(8))
    for _ in range(pings):
        _recv_exact(sock, small)
        sock.sendall(small)
    big = np.empty(nbytes, np.uint8)
    for _ in range(repeat):
        _recv_exact(sock, memoryview(big))
        sock.sendall(b"k")
    sock.close()


def _raw_client(sock: socket.socket, pings: int, nbytes: int, repeat: int) -> tuple[float, list[float]]:
    small = memoryview(bytearray(8))
    rtts = []
    for batch in _batches(pings):
        t0 = time.perf_counter()
        for _ in range(batch):
            sock.sendall(small)
            _recv_exact(sock, small)
        rtts.append((time.perf_counter() - t0) / batch)
    rtt = rtts
    big = np.ones(nbytes, np.uint8)
    ack = memoryview(bytearray(1))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sock.sendall(memoryview(big))
        _recv_exact(sock, ack)
        times.append(time.perf_counter() - t0)
    return rtt, times


# -- covault TcpTransport ----------------------------------------------------------------------
def _covault_server(mode: str, certs: str, port: int, pings: int, nbytes: int, repeat: int) -> None:
    t = TcpTransport(PEER_B, {PEER_A: _connect(mode, certs, port)})
    for _ in range(pings):
        t.send(PEER_A, t.recv(PEER_A, 30.0))
    ack = [np.zeros(1, np.uint8)]
    for _ in range(repeat):
        t.recv(PEER_A, 60.0)
        t.send(PEER_A, ack)
    big = [np.ones(nbytes // 8, np.int64)]
    for _ in range(repeat):
        t.send(PEER_A, big)
        t.recv(PEER_A, 60.0)
    t.close(linger=5.0)


def _covault_client(channel, pings: int, nbytes: int, repeat: int) -> tuple[float, list, list]:
    t = TcpTransport(PEER_A, {PEER_B: channel})
    small = [np.zeros(1, np.int64)]
    rtts = []
    for batch in _batches(pings):
        t0 = time.perf_counter()
        for _ in range(batch):
            t.send(PEER_B, small)
            t.recv(PEER_B, 30.0)
        rtts.append((time.perf_counter() - t0) / batch)
    rtt = rtts
    big = [np.ones(nbytes // 8, np.int64)]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        t.send(PEER_B, big)
        t.recv(PEER_B, 60.0)
        times.append(time.perf_counter() - t0)
    both = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        t.send(PEER_B, big)
        t.recv(PEER_B, 60.0)
        both.append(time.perf_counter() - t0)
    wire = t.wire_bytes_sent
    t.close(linger=5.0)
    payload = pings * 8 + 2 * repeat * (nbytes // 8) * 8
    print(f"  covault framing overhead: {wire - payload} wire bytes over {payload} payload bytes")
    return rtt, times, both


def _run(mode: str, certs: str, pings: int, nbytes: int, repeat: int):
    listener = open_listener(HOST)
    raw = mode.startswith("raw")
    target = _raw_server if raw else _covault_server
    ctx = multiprocessing.get_context("spawn")
    args = (mode, certs, listener.getsockname()[1], pings, nbytes, repeat)
    proc = ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    try:
        listener.settimeout(60.0)
        sock, _ = listener.accept()
        sock.settimeout(None)
        conn = _accept(mode, certs, sock)
        out = (
            _raw_client(conn, pings, nbytes, repeat) if raw else _covault_client(conn, pings, nbytes, repeat)
        )
        if raw:
            conn.close()
    finally:
        listener.close()
        proc.join(30.0)
        if proc.is_alive():
            proc.kill()
    return out


# -- operations over TCP and TLS ---------------------------------------------------------------
OPS = {"mul": 1_000_000, "sigmoid": 1_000_000}
PROTOCOLS = {"2pc": 2, "rep3": 3}


class _OpProgram:
    """Picklable program: ``reps`` timed runs of one operation after a warm-up, each after a
    barrier (a tiny opening to every party, the dealer included)."""

    def __init__(self, op: str, n: int, reps: int):
        self.op, self.n, self.reps = op, n, reps

    def __call__(self, s) -> tuple[list[float], list[float]]:
        a0, b0 = s.compute_parties[0], s.compute_parties[1]
        gen = np.random.default_rng(5)  # benchmark data only
        a = s.input(gen.uniform(-10, 10, self.n) if s.party == a0 else None, owner=a0)
        b = s.input(gen.uniform(-10, 10, self.n) if s.party == b0 else None, owner=b0)
        fn = {"mul": lambda: a * b, "sigmoid": lambda: a.sigmoid()}[self.op]
        fn()
        times, cpu = [], []
        for _ in range(self.reps):
            s.constant(np.zeros(1), integer=True).reveal(to=list(s.parties))
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return times, cpu


def _op_times(op: str, protocol: str, tls: bool, reps: int) -> tuple[list[float], list[float]]:
    """Per operation of one run of ``reps``: seconds (the slowest compute party's) and CPU
    seconds (all parties' processes together, the dealer included)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # PlaintextWarning: the TCP runs are plaintext on purpose
        res = covault.run(
            _OpProgram(op, OPS[op], reps),
            PROTOCOLS[protocol],
            protocol,
            transport="tcp",
            tls=tls,
            timeout=120,
        )
    compute = [p for p in res if p != "dealer"]
    wall = [max(res[p][0][i] for p in compute) for i in range(reps)]
    return wall, [sum(res[p][1][i] for p in res) for i in range(reps)]


def ops_section(ops: list[str], protocols: list[str], rounds: int, reps: int) -> None:
    print(
        f"\noperations, covault.run on loopback, one process per party, {os.cpu_count()} cores; per "
        f"transport {rounds} runs of {reps} operations after a warm-up (alternating TCP and TLS):\n"
        "seconds per operation, best and median; cpu: CPU seconds of all parties' processes per "
        "operation (median)"
    )
    for op in ops:
        for protocol in protocols:
            times: dict[bool, list[float]] = {False: [], True: []}
            cpu: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for tls in (False, True):
                    wall, used = _op_times(op, protocol, tls, reps)
                    times[tls] += wall
                    cpu[tls] += used
            best = {k: min(v) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            print(
                f"{op:8s} {protocol:5s} n={OPS[op]}"
                + "".join(
                    f"   {name} {best[k]:7.4f} s (median {med[k]:7.4f}, cpu {statistics.median(cpu[k]):6.3f})"
                    for name, k in (("tcp", False), ("tls", True))
                )
                + f"   tls/tcp {best[True] / best[False]:4.2f} (medians {med[True] / med[False]:4.2f})",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", choices=("micro", "ops"), default=["micro", "ops"])
    ap.add_argument("--mib", type=int, default=64, help="bulk message size in MiB")
    ap.add_argument(
        "--pings", type=int, default=5000, help="round trips for the latency figure (10 batches, best shown)"
    )
    ap.add_argument("--repeat", type=int, default=5, help="bulk transfers per mode (best is shown)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--ops", nargs="+", choices=list(OPS), default=list(OPS))
    ap.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    ap.add_argument("--rounds", type=int, default=3, help="runs per transport and operation")
    ap.add_argument("--op-repeat", type=int, default=3, help="timed operations per run")
    args = ap.parse_args()
    if "micro" in args.sections:
        micro_section(args)
    if "ops" in args.sections:
        ops_section(args.ops, args.protocols, args.rounds, args.op_repeat)


def micro_section(args: argparse.Namespace) -> None:
    nbytes = args.mib << 20
    mib = nbytes / (1 << 20)
    print(
        f"loopback, two processes; tiny = 8 bytes (round trip: mean of the fastest of 10 batches of {args.pings // 10}), "
        f"bulk = {mib:g} MiB, best of {args.repeat}"
    )
    print(f"{ssl.OPENSSL_VERSION}; TLS modes: mutual TLS 1.3, {_cipher()}")
    with throwaway_certificates([PEER_A, PEER_B]) as certs:
        for mode in args.modes:
            res = _run(mode, str(certs), args.pings, nbytes, args.repeat + 1)  # first bulk run warms up
            rtts, one_way = res[0], res[1][1:]
            line = (
                f"{mode:12s} round trip {min(rtts) * 1e6:6.1f} us (median batch {statistics.median(rtts) * 1e6:6.1f})"
                f"   one-way bulk {mib / min(one_way):6.0f} MiB/s"
                f" = {nbytes / min(one_way) / 1e9:5.2f} GB/s (median {mib / statistics.median(one_way):.0f} MiB/s)"
            )
            if not mode.startswith("raw"):
                line += f"   both ways at once {2 * mib / min(res[2][1:]):6.0f} MiB/s total"
            print(line, flush=True)


def _cipher() -> str:
    with throwaway_certificates([PEER_A, PEER_B]) as certs:
        a, b = socket.socketpair()
        ca = (
            TlsIdentity.from_dir(certs, PEER_A)
            .context(True)
            .wrap_socket(a, server_side=True, do_handshake_on_connect=False)
        )
        cb = TlsIdentity.from_dir(certs, PEER_B).context(False).wrap_socket(b, do_handshake_on_connect=False)
        t = threading.Thread(target=ca.do_handshake)
        t.start()
        cb.do_handshake()
        t.join()
        name = cb.cipher()[0]
        ca.close()
        cb.close()
        return name


if __name__ == "__main__":
    main()
