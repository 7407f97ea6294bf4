"""Revocation: what the check costs per connection.

Two parties (keys from ``covault certs request``, certificates from ``sign``) run the mutual
TLS 1.3 handshake of the transport (``prepare_socket`` at both ends, over a socket pair, one
thread per side) ``--n`` times with no revocation list, then with lists of 1, 1,000 and 10,000
revoked serials in both folders (both ends look the peer up). Prints the median and 90th
percentile per handshake (interleaved rounds), and what the first connection after the list
changes pays once: loading, verifying and indexing it.

    python benchmarks/bench_revocation.py [--n 300] [--out benchmarks/results/revocation.txt]
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from covault.deploy import certs, csr, revocation
from covault.deploy.issued import Index, Issued
from covault.transport.handshake import prepare_socket
from covault.transport.tls import TlsIdentity


def handshakes(ids: dict[str, TlsIdentity], n: int) -> list[float]:
    """Seconds per full handshake (both ends done), ``n`` times."""
    out = []
    for _ in range(n):
        a, b = socket.socketpair()
        done = {}

        def server(b=b, done=done):
            done["y"] = prepare_socket(b, ids["y"], server_side=True)

        t0 = time.perf_counter()
        t = threading.Thread(target=server)
        t.start()
        ch = prepare_socket(a, ids["x"])
        t.join()
        out.append(time.perf_counter() - t0)
        ch.close()
        done["y"].close()
    return out


def fill(ca: Path, revoked: int) -> Path:
    """The CA's list with ``revoked`` serials (made up, none of x's or y's)."""
    index = Index.load(ca)
    index.entries = [e for e in index.entries if e.revoked_at is None]
    now = dt.datetime.now(dt.UTC).isoformat()
    for _ in range(revoked):
        index.entries.append(Issued(secrets.token_hex(19), "gone", now, now, "0" * 64, now, "superseded"))
    index.save()
    return revocation.write_crl(ca)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = root / "ca"
        certs.init_ca(ca)
        folders = {}
        for n in "xy":
            folders[n] = root / n
            request, _ = csr.request(folders[n], n)
            csr.sign(ca, request, days=1)  # NAME.pem lands beside the request, in the folder
            shutil.copy(ca / "ca.pem", folders[n])
        ca_cert = certs.load_certificate(ca / "ca.pem", "ca")
        cases, loads = {}, {}
        for revoked in (None, 1, 1000, 10000):  # each case its own copy of the two folders
            case = {n: root / f"{revoked}" / n for n in "xy"}
            for n, f in case.items():
                shutil.copytree(folders[n], f)
            if revoked is not None:
                crl = fill(ca, revoked)
                for f in case.values():
                    shutil.copy(crl, f)
                watch = revocation.RevocationWatch(case["x"] / revocation.CRL_FILE, ca_cert, "bench")
                t0 = time.perf_counter()
                watch.lookup(ca_cert)
                loads[revoked] = (time.perf_counter() - t0, crl.stat().st_size)
            cases[revoked] = {n: TlsIdentity.from_dir(case[n], n) for n in "xy"}
            handshakes(cases[revoked], 10)  # warm-up
        times: dict[int | None, list[float]] = {k: [] for k in cases}
        for _ in range(5):  # interleaved rounds: the machine's load falls on every case alike
            for revoked, ids in cases.items():
                times[revoked] += handshakes(ids, args.n // 5)
        for revoked, t in times.items():
            t.sort()
            what = "no revocation list" if revoked is None else f"list of {revoked} serials"
            load = ""
            if revoked is not None:
                secs, size = loads[revoked]
                load = f"; first connection after a change: load, verify, index {1e3 * secs:.1f} ms ({size} bytes)"
            lines.append(
                f"{what:>26}: handshake median {1e3 * statistics.median(t):.2f} ms, "
                f"p90 {1e3 * t[int(0.9 * len(t))]:.2f} ms{load}"
            )
            print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
