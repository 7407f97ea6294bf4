"""A short tour of the engine: hospitals pool statistics without pooling records.

Each compute party holds its own patients' (age, systolic pressure, cholesterol) rows. Together
they compute, under MPC, the pooled mean and standard deviation of every column, the correlation
of age and pressure, the highest pressure, how many patients are above 140 mmHg, and the mean of
a public logistic risk score — and compare each figure with the same computation on the pooled
plaintext rows. Run it with ``covault showcase`` (``covault demo`` is the joint-training demo).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from covault import schemes

ORDER = 20
HELP = "engine tour: hospitals pool statistics under MPC"
DESCRIPTION = None
COLUMNS = ("age", "systolic", "cholesterol")
RISK_WEIGHTS = np.array([0.04, 0.03, 0.01])
RISK_BIAS = -8.5


def hospital_rows(index: int, n: int = 2000) -> np.ndarray:
    """Deterministic synthetic records of hospital ``index`` (demo data, not a secret)."""
    gen = np.random.default_rng(1000 + index)
    age = gen.uniform(25, 85, n)
    systolic = 95 + 0.55 * age + gen.normal(0, 12, n)
    chol = 160 + 0.4 * age + gen.normal(0, 25, n)
    return np.column_stack([age, systolic, chol])


def plaintext_report(parts: list[np.ndarray]) -> dict[str, np.ndarray]:
    data = np.concatenate(parts)
    corr = np.corrcoef(data[:, 0], data[:, 1])[0, 1]
    score = 1 / (1 + np.exp(-(data @ RISK_WEIGHTS + RISK_BIAS)))
    return {
        "mean": data.mean(0),
        "std": data.std(0),
        "corr(age, systolic)": np.array(corr),
        "max systolic": np.array(data[:, 1].max()),
        "patients > 140 mmHg": np.array((data[:, 1] > 140).sum()),
        "mean risk score": np.array(score.mean()),
    }


def secure_report(session) -> dict:
    """The SPMD program every party runs."""
    import covault

    hospitals = session.compute_parties
    me = hospitals.index(session.party) if session.party in hospitals else -1
    start = time.perf_counter()
    parts = [session.input(hospital_rows(i) if i == me else None, owner=h) for i, h in enumerate(hospitals)]
    data = covault.concatenate(parts, axis=0)
    n = data.shape[0]
    mean = data.mean(axis=0)
    centred = data - mean
    cov = (centred.T @ centred) / n
    var = covault.stack([cov[0, 0], cov[1, 1], cov[2, 2]])
    std = var.sqrt()
    inv_std = var.inv_sqrt()
    corr = cov[0, 1] * inv_std[0] * inv_std[1]
    score = (data @ RISK_WEIGHTS + RISK_BIAS).sigmoid()
    out = {
        "mean": mean.reveal(),
        "std": std.reveal(),
        "corr(age, systolic)": corr.reveal(),
        "max systolic": data[:, 1].max().reveal(),
        "patients > 140 mmHg": (data[:, 1] > 140.0).sum().reveal(),
        "mean risk score": score.mean().reveal(),
    }
    return {
        "result": out,
        "seconds": time.perf_counter() - start,
        "stats": session.stats.as_dict(),
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    a = np.atleast_1d(np.asarray(v, dtype=np.float64))
    return ", ".join(f"{x:.4g}" for x in a)


def tour(protocols: tuple[str, ...] | None = None, transport: str = "tcp") -> int:
    """Print the tour for each of ``protocols`` (default: every scheme of :mod:`covault.schemes`)."""
    import covault

    for protocol in schemes.names() if protocols is None else protocols:
        n = schemes.get(protocol).parties
        parts = [hospital_rows(i) for i in range(n)]
        t0 = time.perf_counter()
        plain = plaintext_report(parts)
        plain_s = time.perf_counter() - t0
        res = covault.run(secure_report, n, protocol, transport=transport)
        first = res["p0"]
        print(
            f"\n== {protocol}: {n} hospitals, {sum(len(p) for p in parts)} patients, transport={transport} =="
        )
        print(f"{'statistic':<22} {'secure (MPC)':<34} {'pooled plaintext':<34}")
        for key, want in plain.items():
            print(f"{key:<22} {_fmt(first['result'][key]):<34} {_fmt(want):<34}")
        print(f"\n{'party':<8} {'seconds':>8} {'MB sent':>9} {'MB recv':>9} {'rounds':>7}")
        for party, r in res.items():
            st = r["stats"]
            print(
                f"{party:<8} {r['seconds']:>8.3f} {st['bytes_sent'] / 1e6:>9.2f} "
                f"{st['bytes_received'] / 1e6:>9.2f} {st['rounds']:>7}"
            )
        print(f"plaintext on pooled data: {plain_s:.4f} s")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=[*schemes.names(), "both"], default="both")
    p.add_argument("--transport", choices=["tcp", "local"], default="tcp")


def main(args: argparse.Namespace) -> int:
    return tour(None if args.protocol == "both" else (args.protocol,), args.transport)
