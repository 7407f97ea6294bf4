"""Data-owner scale benchmark: three banks, each with a Parquet file, train logistic regression.

Usage: python benchmarks/bench_ingest.py [--rows N] [--epochs E] [--batch-size B] [--data DIR]
[--only-prepare] [--out FILE]

Each of three parties (``bank_a``, ``bank_b``, ``bank_c``: the rep3 compute parties) owns a
Parquet file of ``--rows`` rows (default 1,000,000) x 30 numeric features and a 0/1 label
``fraud`` (~10% positives, a logistic model of the features). ``amount``, ``balance`` and
``income`` hold values in the millions; ``age``, ``tenure`` and ``score`` miss ~5% of their
cells and are imputed with the pooled mean (``[transform]``, ``impute = "mean"``). The files
and the job are written once into ``--data`` (default: a folder in the temp dir) and reused.

The job runs with :func:`covault.jobs.run_local` over TCP with mutual TLS, one OS process per
party: each party reads its file, enforces the default policy, splits off 20% held-out rows,
fits the transforms in MPC, secret-shares its rows, and the pooled rows train one epoch (the
default) and are evaluated. Printed per phase: the slowest compute party's seconds, then per
party the bytes sent, the rounds and the peak resident memory of its process so far
(``VmHWM``); then each party's totals. The plaintext baseline runs the same steps in one
process with numpy (read the three files, impute, scale, standardise, the same mini-batch SGD
with the piecewise sigmoid) and scikit-learn's ``LogisticRegression`` for the accuracy.

``--only-prepare``: generate the data and the job file and stop.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARTIES = ("bank_a", "bank_b", "bank_c")
N_FEATURES = 30
MILLIONS = ("amount", "balance", "income")
MISSING = ("age", "tenure", "score")
NAMES = [*MILLIONS, *MISSING, *(f"x{i}" for i in range(N_FEATURES - len(MILLIONS) - len(MISSING)))]
LABEL = "fraud"
CHUNK = 100_000  # rows generated and written at a time (one Parquet row group)
MB = 1 << 20


def _weights() -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(123)  # synthetic benchmark data only, not secret
    return rng.normal(0, 0.6, N_FEATURES), -2.9  # intercept: ~10% positives


def _chunk(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw features (n, 30) with missing cells, their standardised twin, the labels."""
    z = rng.normal(size=(n, N_FEATURES))
    w, b = _weights()
    y = (rng.random(n) < 1 / (1 + np.exp(-(z @ w + b)))).astype(np.float64)
    raw = z.copy()
    raw[:, 0] = np.round(np.exp(13.5 + 0.5 * z[:, 0]), 2)  # amount: ~ 0.7e6 .. 2e6
    raw[:, 1] = np.round(2e6 + 1e6 * z[:, 1], 2)  # balance
    raw[:, 2] = np.round(5e6 + 2e6 * z[:, 2], 2)  # income
    raw[:, 3] = np.round(45 + 12 * z[:, 3])  # age
    raw[:, 4] = np.round(10 + 4 * z[:, 4], 1)  # tenure
    raw[:, 5] = np.round(600 + 80 * z[:, 5])  # score
    for j in range(3, 6):
        raw[rng.random(n) < 0.05, j] = np.nan
    return raw, z, y


def write_party(path: Path, rows: int, seed: int) -> None:
    """One party's Parquet file, written in row groups of CHUNK rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([*(pa.field(n, pa.float64()) for n in NAMES), pa.field(LABEL, pa.int64())])
    tmp = path.with_suffix(".part")
    with pq.ParquetWriter(tmp, schema) as out:
        for start in range(0, rows, CHUNK):
            raw, _, y = _chunk(rng, min(CHUNK, rows - start))
            cols = [pa.array(raw[:, j], from_pandas=True) for j in range(N_FEATURES)]
            out.write_table(pa.Table.from_arrays([*cols, pa.array(y.astype(np.int64))], schema=schema))
    tmp.replace(path)


def prepare(folder: Path, rows: int, epochs: int, batch: int) -> Path:
    """Write the three files (unless present) and the job file; the job file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        'protocol = "rep3"',
        'task = "logistic_regression"',
        f'label = "{LABEL}"',
        f"compute = {list(PARTIES)!r}".replace("'", '"'),
        'reveal_model_to = ["bank_a"]',
        "test_fraction = 0.2",
        "seed = 7",
        "[transform]",
        *(f'{c} = {{ impute = "mean" }}' for c in MISSING),
        "[model]",
        f"epochs = {epochs}",
        f"batch_size = {batch}",
        "learning_rate = 0.1",
    ]
    for i, p in enumerate(PARTIES):
        f = folder / f"{p}_{rows}.parquet"
        if not f.exists():
            t0 = time.perf_counter()
            write_party(f, rows, seed=1000 + i)
            print(
                f"wrote {f} ({f.stat().st_size / MB:.0f} MiB, {time.perf_counter() - t0:.1f} s)", flush=True
            )
        lines += [f'[parties."{p}"]', f'data = "{f.name}"']
    job = folder / f"job_{rows}_{epochs}_{batch}.toml"
    job.write_text("\n".join(lines) + "\n")
    return job


def plaintext(folder: Path, rows: int, epochs: int, batch: int) -> dict:
    """The same job in one process, in the clear: seconds of reading + preparing, of the numpy
    training (same algorithm), its accuracy, and scikit-learn's accuracy."""
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    from covault.ml import batching

    t0 = time.perf_counter()
    xs, ys = [], []
    for p in PARTIES:
        t = pq.read_table(folder / f"{p}_{rows}.parquet")
        xs.append(np.column_stack([t[n].to_numpy(zero_copy_only=False) for n in NAMES]))
        ys.append(t[LABEL].to_numpy().astype(np.float64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    del xs, ys
    rng = np.random.default_rng(7)
    test = rng.random(len(y)) < 0.2
    means = np.nanmean(x[~test], axis=0)
    miss = np.isnan(x)
    x[miss] = np.take(means, np.nonzero(miss)[1])
    x_tr, y_tr, x_te, y_te = x[~test], y[~test], x[test], y[test]
    mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    w, b, n = np.zeros(N_FEATURES), 0.0, len(y_tr)
    for epoch in range(epochs):
        order = batching.epoch_order(n, epoch, 0)
        for sl in batching.batch_slices(n, batch):
            xb, yb = x_tr[order[sl]], y_tr[order[sl]]
            g = np.clip(0.5 + (xb @ w + b) / 4, 0.0, 1.0) - yb
            w -= 0.1 * (xb.T @ g) / len(yb)
            b -= 0.1 * g.sum() / len(yb)
    train = time.perf_counter() - t0
    acc = float(np.mean(((x_te @ w + b) > 0) == (y_te > 0.5)))
    t0 = time.perf_counter()
    sk = LogisticRegression(max_iter=200).fit(x_tr, y_tr)
    sk_secs = time.perf_counter() - t0
    return {
        "prepare": prep,
        "train": train,
        "accuracy": acc,
        "sklearn": sk_secs,
        "sklearn_accuracy": float(sk.score(x_te, y_te)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per party")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "covault-bench-ingest")
    ap.add_argument("--only-prepare", action="store_true", help="write the data and the job, then stop")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ingest.txt")
    args = ap.parse_args(argv)
    job = prepare(args.data, args.rows, args.epochs, args.batch_size)
    if args.only_prepare:
        print(f"job file: {job}")
        return 0
    from covault.jobs import run_local

    cmd = "python " + " ".join(
        shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    )
    lines = [
        f"$ {cmd}",
        f"# covault data-owner scale: 3 parties x {args.rows:,} rows x {N_FEATURES} columns (Parquet), "
        f"logistic regression, rep3, {args.epochs} epoch(s), batch {args.batch_size}; tcp + TLS 1.3, "
        f"one process per party ({platform.machine()}, {_cores()} cores, python {platform.python_version()})",
    ]
    for line in lines:
        print(line, flush=True)
    res = run_local(job, transport="tcp", progress=False)
    plain = plaintext(args.data, args.rows, args.epochs, args.batch_size)
    head = f"{'phase':<12} {'seconds':>8}  " + "  ".join(
        f"{p + ' MB sent/rounds/peak MiB':>34}" for p in PARTIES
    )
    out = [
        f"pooled rows: {res['train_rows']:,} training, {res['test_rows']:,} held-out; "
        f"accuracy {res['metrics']['accuracy']:.4f}"
        if res["metrics"]
        else "no metrics",
        head,
    ]
    for name, ph in res["phases"].items():
        cells = "  ".join(
            f"{ph['bytes_sent'][p] / 1e6:>12.1f} {ph['rounds'][p]:>8} {_mib(ph['peak_memory'][p]):>11}"
            for p in PARTIES
        )
        out.append(f"{name:<12} {ph['seconds']:>8.2f}  {cells}")
    cells = "  ".join(
        f"{res['bytes_sent'][p] / 1e6:>12.1f} {res['rounds'][p]:>8} {_mib(res['peak_memory'][p]):>11}"
        for p in PARTIES
    )
    out.append(f"{'total':<12} {res['seconds']:>8.2f}  {cells}")
    secure_train = res["phases"]["train"]["seconds"]
    plain_total = plain["prepare"] + plain["train"]
    out += [
        f"wall (with process start-up): {res['wall_seconds']:.2f} s; peak memory per party "
        + ", ".join(f"{p} {_mib(res['peak_memory'][p])} MiB" for p in PARTIES)
        + f" (limit 2048 MiB: {'met' if max(res['peak_memory'].values()) <= 2 << 30 else 'NOT met'})",
        f"plaintext (numpy, one process): read + prepare {plain['prepare']:.2f} s, train {plain['train']:.3f} s "
        f"(accuracy {plain['accuracy']:.4f}); scikit-learn LogisticRegression fit {plain['sklearn']:.2f} s "
        f"(accuracy {plain['sklearn_accuracy']:.4f})",
        f"ratio secure / plaintext: train {secure_train / plain['train']:.0f}x, "
        f"whole job {res['seconds'] / plain_total:.0f}x",
    ]
    for line in out:
        print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines + out) + "\n")
    return 0


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MB:.0f}"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
