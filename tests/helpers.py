"""Test helpers shared by the test modules: run a program under each protocol and check that every
compute party agrees; a value at its owner only; free loopback ports; bit balance of shares; small
job files, CSV tables and their deployment (certificates, addresses); a TLS consortium config;
approvals; party processes; an HTTP gateway's token and JSON requests."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

import covault
from covault import schemes
from covault.cli import main as cli

PROTOCOLS = [
    (s.name, s.parties) for s in sorted(schemes.SCHEMES.values(), key=lambda s: s.name)
]  # every scheme


class Variant(tuple):
    """``(scheme, parties)`` as in :data:`PROTOCOLS`, run with correlation ``provider`` (None:
    the scheme's default); the ``proto`` fixture runs every test over :data:`VARIANTS`."""

    provider: str | None

    def __new__(cls, name: str, parties: int, provider: str | None = None):
        self = super().__new__(cls, (name, parties))
        self.provider = provider
        return self

    def __getnewargs__(self):  # copy and pickle rebuild it with its provider
        return (self[0], self[1], self.provider)

    @property
    def id(self) -> str:
        return self[0] if self.provider is None else f"{self[0]}-{self.provider}"


VARIANTS = [Variant(*p) for p in PROTOCOLS] + [Variant("2pc", 2, "ot")]  # 2pc without a dealer too
IDS = [v.id for v in VARIANTS]


def dealt(proto) -> bool:
    """Whether ``proto`` runs with dealt correlations (the documented round and byte counts);
    the ``ot`` provider's costs are those of its OT extension (tests/test_provider_ot.py)."""
    return getattr(proto, "provider", None) != "ot"


def fused(proto, n: int) -> bool:
    """Whether an msb of ``n`` elements under ``proto`` takes the radix-4 carry tree (2pc with
    the dealer: one-round multi-input ANDs, 3 AND rounds on 64 and on 32 bits) rather than the
    binary one (7 and 6)."""
    from covault.ops import compare

    return proto[0] == "2pc" and dealt(proto) and n <= compare.FUSED_ELEMENTS


def skip_unless_dealt(proto) -> None:
    """Skip a test that only counts the dealt path's rounds and bytes, under the ``ot`` provider."""
    import pytest

    if not dealt(proto):
        pytest.skip("counts the dealt path's rounds and bytes; the ot provider's: tests/test_provider_ot.py")


ULP = 2.0**-16
HOSPITALS = ("hospital_a", "hospital_b", "hospital_c")


def run_both(program, proto, **kw):
    """Run ``program`` under ``proto`` = (name, n); return the first compute party's result
    after checking that every compute party returned the same thing."""
    name, n = proto
    if getattr(proto, "provider", None) is not None:
        kw.setdefault("provider", proto.provider)
    res = covault.run(program, n, name, **kw)
    compute = [p for p in res if p != "dealer"]
    first = res[compute[0]]
    for p in compute[1:]:
        _assert_same(first, res[p])
    return first


def _assert_same(a, b):
    if isinstance(a, tuple | list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def owner_value(session, value, owner=None):
    """``value`` at the owner (default: first compute party), None elsewhere."""
    owner = owner or session.compute_parties[0]
    return value if session.party == owner else None


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free at the time of the call."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def door_ports(n: int) -> list[int]:
    """``n`` loopback ports each free together with the next one (a compute party's front door)."""
    held, out = [], []
    try:
        while len(out) < n:
            a = socket.socket()
            a.bind(("127.0.0.1", 0))
            held.append(a)
            port = a.getsockname()[1]
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                b.close()
                continue
            held.append(b)
            out.append(port)
    finally:
        for s in held:
            s.close()
    return out


def bit_balance_z(words: np.ndarray) -> float:
    """Largest |z-score| over the 64 bit positions of ``words`` against fair coins."""
    u = words.reshape(-1).view(np.uint64)
    bits = ((u[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.float64)
    n = len(u)
    return float(np.abs((bits.sum(0) - n / 2) / np.sqrt(n / 4)).max())


def tiny_job(tmp_path: Path, task: str = "logistic_regression") -> Path:
    """Three parties with 40-60 synthetic rows each, 4 features; 2 epochs."""
    gen = np.random.default_rng(11)
    w = np.array([1.5, -2.0, 0.5, 1.0])
    label = "y" if task == "logistic_regression" else "price"
    lines = [
        'protocol = "rep3"',
        f'task = "{task}"',
        f'label = "{label}"',
        "test_fraction = 0.3",
        "seed = 2",
        "[model]",
        "epochs = 2",
        "batch_size = 16",
    ]
    for i, name in enumerate(HOSPITALS):
        x = gen.normal(0, 1, (40 + 10 * i, 4))
        score = x @ w + gen.normal(0, 0.3, len(x))
        y = (score > 0).astype(int) if task == "logistic_regression" else (score + 5).round(4)
        with (tmp_path / f"{name}.csv").open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["x1", "x2", "x3", "x4", label])
            out.writerows([*np.round(row, 5), t] for row, t in zip(x, y))
        lines += [f'[parties."{name}"]', f'data = "{name}.csv"']
    path = tmp_path / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def approved_tiny_job(tmp_path: Path, receiver: str = "hospital_c") -> Path:
    """:func:`tiny_job` deployed for the three hospitals (certificates, addresses), revealed to
    ``receiver`` only, with every party's signed approval."""
    path = tiny_job(tmp_path)
    deploy_job(
        path,
        list(HOSPITALS),
        lambda t: t.replace("[model]", f'reveal_model_to = ["{receiver}"]\ntimeout = 10\n[model]'),
    )
    approve_all(path, HOSPITALS)
    return path


def deploy_job(path: Path, names: list[str], edit) -> None:
    """Give the job at ``path`` a consortium CA, a certificate and a loopback address per party
    (``edit`` changes the job text first)."""
    certs = path.parent / "certs"
    assert cli(["certs", "init", str(certs), "--days", "2"]) == 0
    for n in names:
        assert cli(["certs", "issue", str(certs), n, "--days", "2"]) == 0
    text = edit(path.read_text()) + '[tls]\ncerts = "certs"\n'
    for n, port in zip(names, free_ports(len(names))):
        for head in (f'[parties."{n}"]\n', f"[parties.{n}]\n"):
            text = text.replace(head, f'{head}address = "127.0.0.1:{port}"\n')
    path.write_text(text)


def write_job(path: Path, top: dict, model: dict | None = None, parties: dict | None = None) -> Path:
    """A job TOML file from plain values (strings, numbers, lists)."""
    q = json.dumps
    val = lambda v: q(v) if not isinstance(v, bool) else ("true" if v else "false")  # noqa: E731
    lines = [f"{k} = {val(v)}" for k, v in top.items()]
    if model:
        lines += ["[model]", *(f"{k} = {val(v)}" for k, v in model.items())]
    for name, table in (parties or {}).items():
        lines += [f"[parties.{q(name)}]", *(f"{k} = {val(v)}" for k, v in table.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(path: Path, columns: list[str], rows) -> Path:
    """A CSV file with a header row."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows(rows)
    return path


def run_parties(path: Path, options: dict[str, list[str]]) -> dict[str, tuple[str, str, int]]:
    """``covault party PATH --as NAME OPTIONS`` for every party at once (as on separate hosts);
    ``{name: (stdout, stderr, exit code)}``."""
    cmd = [sys.executable, "-m", "covault", "party", str(path), "--as"]
    procs = {
        n: subprocess.Popen([*cmd, n, *opts], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n, opts in options.items()
    }
    return wait_parties(procs)


def wait_parties(procs: dict[str, subprocess.Popen], timeout: float = 90) -> dict[str, tuple[str, str, int]]:
    """``{name: (stdout, stderr, exit code)}`` of party processes; any still running after
    ``timeout`` s (or an error here) is killed."""
    done = {}
    try:
        for n, p in procs.items():
            done[n] = (*p.communicate(timeout=timeout), p.returncode)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


def tls_consortium(folder: Path, top: list[str], names) -> Path:
    """``folder/consortium.toml``: the ``top`` lines, ``[tls] certs = "certs"`` (a fresh CA and
    every party's certificate, issued at one desk) and a free loopback address per party, the
    port after it free too (a compute party's front door takes it when it serves)."""
    certs = folder / "certs"
    assert cli(["certs", "init", str(certs), "--days", "2"]) == 0
    lines = [*top, "[tls]", 'certs = "certs"']
    for n, port in zip(names, door_ports(len(names))):
        assert cli(["certs", "issue", str(certs), n, "--days", "2"]) == 0
        lines += [f"[parties.{n}]", f'address = "127.0.0.1:{port}"']
    path = folder / "consortium.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def approve_all(path: Path, names) -> None:
    """``covault approve PATH --as NAME --yes`` for every party of ``names`` (its signed
    approval in the job's certificate folder)."""
    for n in names:
        assert cli(["approve", str(path), "--as", n, "--yes"]) == 0, n


def post(url: str, body, token: str) -> dict:
    """POST ``body`` as JSON to ``url`` with a bearer ``token``: the JSON answer."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as r:
        return json.loads(r.read())


def gateway_token(url: str, token_file: Path) -> str:
    """Wait until the gateway at ``url`` answers (a wrong token's 401), then its token."""
    for _ in range(300):
        if token_file.exists():
            try:
                post(url, {"rows": []}, "wrong")
            except urllib.error.HTTPError:
                break
            except OSError:
                pass
        time.sleep(0.05)
    return token_file.read_text().strip()
