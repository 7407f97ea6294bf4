"""Rows per second and peak memory of the connectors: CSV and Parquet files of ROWS x 30 random
numbers, each read twice in a fresh process (``python benchmarks/bench_connectors.py [ROWS]``;
Linux: the peak RSS is read from /proc)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

READ = """
import sys, time
import pyarrow.parquet
from covault.ingest.connectors import read_table
def peak_kib():  # this process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
base = peak_kib()
t = time.perf_counter()
table = read_table(sys.argv[1])
seconds = time.perf_counter() - t
grow = (peak_kib() - base) / 1024
data = sum(c.values.nbytes for c in table.columns) / 2**20
print(f"{sys.argv[1].rsplit('/', 1)[-1]:>14}: {table.n_rows / seconds:>12,.0f} rows/s, "
      f"max RSS growth {grow:.0f} MiB for {data:.0f} MiB of columns")
"""


def main(rows: int) -> None:
    x = np.random.default_rng(1).standard_normal((rows, 30))
    with tempfile.TemporaryDirectory() as d:
        csv, pq = Path(d) / "numbers.csv", Path(d) / "numbers.parquet"
        header = ",".join(f"c{i}" for i in range(30))
        np.savetxt(csv, x.round(6), delimiter=",", fmt="%.6f", header=header, comments="")
        import pyarrow as pa
        import pyarrow.parquet as pqm

        pqm.write_table(pa.table({f"c{i}": x[:, i] for i in range(30)}), pq)
        for path in (csv, pq):
            for _ in range(2):
                subprocess.run([sys.executable, "-c", READ, str(path)], check=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
