"""TCP transport cost next to raw sockets, between two processes on loopback.

Prints, for each mode, the round-trip latency of a tiny message (one int64) and the bulk
throughput of one large message (default 64 MiB) sent one way and acknowledged, plus (covault
only) both sides sending the large message at once and then receiving. ``raw`` uses the same
loopback socket with ``sendall``/``recv_into`` of fixed, known sizes: the floor any framing
adds to.

    python benchmarks/bench_transport.py [--mib 64] [--pings 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import time

import numpy as np

from covault.transport.tcp import HOST, TcpTransport, open_listener, prepare_socket

PEER_A, PEER_B = "a", "b"


# -- raw sockets -------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, buf: memoryview) -> None:
    pos = 0
    while pos < len(buf):
        n = sock.recv_into(buf[pos:])
        if not n:
            raise ConnectionError("closed")
        pos += n


def _raw_server(port: int, pings: int, nbytes: int, repeat: int) -> None:
    sock = prepare_socket(socket.create_connection((HOST, port)))
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
    t0 = time.perf_counter()
    for _ in range(pings):
        sock.sendall(small)
        _recv_exact(sock, small)
    rtt = (time.perf_counter() - t0) / pings
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
def _covault_server(port: int, pings: int, nbytes: int, repeat: int) -> None:
    sock = prepare_socket(socket.create_connection((HOST, port)))
    t = TcpTransport(PEER_B, {PEER_A: sock})
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


def _covault_client(sock: socket.socket, pings: int, nbytes: int, repeat: int) -> tuple[float, list, list]:
    t = TcpTransport(PEER_A, {PEER_B: sock})
    small = [np.zeros(1, np.int64)]
    t0 = time.perf_counter()
    for _ in range(pings):
        t.send(PEER_B, small)
        t.recv(PEER_B, 30.0)
    rtt = (time.perf_counter() - t0) / pings
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


def _run(mode: str, pings: int, nbytes: int, repeat: int):
    listener = open_listener(HOST)
    target = _raw_server if mode == "raw" else _covault_server
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=target, args=(listener.getsockname()[1], pings, nbytes, repeat), daemon=True)
    proc.start()
    try:
        listener.settimeout(60.0)
        sock, _ = listener.accept()
        prepare_socket(sock)
        sock.settimeout(None)
        out = (
            _raw_client(sock, pings, nbytes, repeat)
            if mode == "raw"
            else _covault_client(sock, pings, nbytes, repeat)
        )
        if mode == "raw":
            sock.close()
    finally:
        listener.close()
        proc.join(30.0)
        if proc.is_alive():
            proc.kill()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="bulk message size in MiB")
    ap.add_argument("--pings", type=int, default=2000, help="round trips for the latency figure")
    ap.add_argument("--repeat", type=int, default=5, help="bulk transfers per mode (best is shown)")
    args = ap.parse_args()
    nbytes = args.mib << 20
    mib = nbytes / (1 << 20)
    print(f"loopback, two processes; tiny = 8 bytes, bulk = {mib:g} MiB, best of {args.repeat}")
    for mode in ("raw", "covault"):
        res = _run(mode, args.pings, nbytes, args.repeat + 1)  # the first bulk transfer warms up
        rtt, one_way = res[0], res[1][1:]
        line = (
            f"{mode:8s} round trip {rtt * 1e6:7.1f} us   "
            f"one-way bulk {mib / min(one_way):8.0f} MiB/s (median {mib / statistics.median(one_way):.0f})"
        )
        if mode == "covault":
            line += f"   both ways at once {2 * mib / min(res[2][1:]):8.0f} MiB/s total"
        print(line)


if __name__ == "__main__":
    main()
