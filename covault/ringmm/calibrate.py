"""This machine's calibration of the ring matmul engines: each available engine timed on a few
representative shapes, a cost model fitted per engine, the result cached per machine and
library versions so that later processes only read it.

Cost model. An engine's time for one ``(m, k) @ (k, n)`` product is predicted as
``sum_i c_i t_i``, where the terms ``t_i`` are the engine's own (``engine.terms(m, k, n,
blocks)``: a fixed cost, multiply-adds over padded blocks, operand or output elements). The
coefficients ``c_i >= 0`` are fitted by least squares on relative errors, for every candidate
block pair in ``engine.BLOCKS``; the pair with the smallest error is kept.

Measuring. The best of ``ROUNDS`` x ``REPS`` runs per engine and shape in ``SHAPES``; an
engine stops where its best rate so far projects it beyond ``SLOW`` seconds (numpy and einsum
on the largest: they cannot win there) or when its runs have taken ``BUDGET`` seconds, and its
model is not used from that size on. The int8 engine's exactness self-check runs first. About
0.2-0.3 s on a quiet 2-core machine (numpy and einsum the most), up to about a second when other
processes keep taking the cores.

Cache. One JSON file per key in :func:`cache_dir`, named by a digest of the key: CPU model,
logical CPU count, torch's intra-op threads, the versions of covault, numpy and torch, the
engines and the format of this file. It is written atomically (a temporary file, then
``os.replace``), so party processes that start together each read a whole file or none; a
missing, unreadable, corrupt or mismatched file is measured again and rewritten, and a cache
directory that cannot be written only means measuring again in the next process. A measurement
that took over ``TRUSTED`` seconds (other processes kept taking the cores: the figures are
doubtful) serves its process only. To measure again, delete the ``matmul-*.json`` files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import platform
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

FORMAT = 2  # of the cache file and the cost model; a new format measures again
SHAPES = (  # (m, k, n) by work; no powers of two, whose strides slow numpy down 2-3x
    (30, 30, 30),  # fixed costs
    (4, 250, 500),  # few rows
    (500, 250, 4),  # few columns
    (120, 60, 100),  # small, rows and columns past a block
    (500, 8, 500),  # short inner size: per-output costs
    (24, 250, 500),  # rows past a block
    (500, 250, 40),  # columns within a block
    (250, 250, 250),  # multiply-adds
    (500, 500, 250),  # multiply-adds, larger
)
ROUNDS = 2
REPS = 2  # back-to-back runs per round: the first warms the caches
SLOW = 0.01  # seconds: an engine projected slower than this on a shape stops there
BUDGET = 0.2  # seconds of runs per engine, at most (a few where the machine stalls)
TRUSTED = 1.5  # seconds: a calibration that took longer (a busy machine) is not written
LOCK_WAIT = 5.0  # seconds a process waits for another one's measurement before measuring itself
ENV_DIR = "COVAULT_CACHE_DIR"

Sample = tuple[str, int, int, int, float]  # engine, m, k, n, seconds
_UNKNOWN = object()
_LOCK = threading.Lock()  # one measurement at a time per process (parties may be threads)


@dataclass(frozen=True)
class Fit:
    """One engine's fitted cost model: block sizes, a coefficient per term, where it ends."""

    blocks: tuple[int, int]
    coef: tuple[float, ...]
    limit: float = math.inf  # m*k*n from which the engine was too slow to be measured

    def predict(self, engine: ModuleType, m: int, k: int, n: int) -> float:
        """Predicted seconds of one ``(m, k) @ (k, n)`` product by ``engine`` (inf from ``limit``)."""
        if m * k * n >= self.limit:
            return math.inf
        return sum(c * t for c, t in zip(self.coef, engine.terms(m, k, n, self.blocks)))


@dataclass(frozen=True)
class Calibration:
    """The fitted models of the engines available here, and how they were obtained."""

    fits: dict[str, Fit]
    samples: tuple[Sample, ...]
    seconds: float  # what measuring and fitting took, in the process that did it
    loaded: bool  # read from the cache file rather than measured in this process
    path: Path
    _choices: dict[tuple[int, int, int], str | None] = field(default_factory=dict, compare=False, repr=False)

    def fastest(self, engines: Mapping[str, ModuleType], m: int, k: int, n: int) -> str | None:
        """The available engine with the least predicted time for one ``(m, k) @ (k, n)``
        product (None if no engine was measured); remembered per shape."""
        shape = (m, k, n)
        known = self._choices.get(shape, _UNKNOWN)  # one lookup: another thread may clear the dict
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        ranked = sorted(self.fits, key=lambda e: self.fits[e].predict(engines[e], m, k, n))
        choice = next((e for e in ranked if engines[e].available()), None)
        if len(self._choices) >= 4096:
            self._choices.clear()
        self._choices[shape] = choice
        return choice


def cache_dir() -> Path:
    """``$COVAULT_CACHE_DIR``, else ``$XDG_CACHE_HOME/covault``, else ``~/.cache/covault``."""
    if d := os.environ.get(ENV_DIR):
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "covault"


def calibration(engines: tuple[ModuleType, ...]) -> Calibration:
    """This machine's calibration of ``engines`` for torch's current number of threads: from
    this process's memory, else from the cache file, else measured now (and the file written).
    The cache directory is looked up at a process's first use (again after :func:`forget`)."""
    torch = _torch()
    threads = None if torch is None else torch.get_num_threads()
    with _LOCK:
        return _memo(threads, engines)


def forget() -> None:
    """Drop this process's memory of calibrations: the next use reads the cache file again."""
    with _LOCK:
        _memo.cache_clear()


@functools.lru_cache(maxsize=16)
def _memo(threads: int | None, engines: tuple[ModuleType, ...]) -> Calibration:
    k = key(engines, threads)
    digest = hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"matmul-{digest}.json"
    cal = load(path, k, engines)
    if cal is not None:
        return cal
    with _machine_lock(path):  # party processes starting together: one measures, the others read
        cal = load(path, k, engines)
        if cal is None:
            t0 = time.perf_counter()
            available = [e for e in engines if e.available()]
            samples = measure(available)
            fits = fit(available, samples)
            cal = Calibration(fits, tuple(samples), time.perf_counter() - t0, False, path)
            if cal.seconds < TRUSTED:
                store(path, k, cal)
    return cal


@contextlib.contextmanager
def _machine_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s directory (``flock``) while measuring, so that
    processes calibrating at once do not skew each other's timings. Waits at most
    :data:`LOCK_WAIT` s (a holder that stalls must not stall this process); where the lock
    cannot be taken (no ``fcntl``, a read-only cache directory) the process measures alone."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)  # the cache directory itself: no lock file
    except (ImportError, OSError):
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break  # measure without it
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


@functools.cache
def _torch() -> ModuleType | None:
    """torch, or None where it is not installed. An import statement, not ``sys.modules``: a
    party thread must wait while another thread is still importing torch (a module found in
    ``sys.modules`` may be only partly initialised)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def key(engines: Sequence[ModuleType], threads: int | None) -> dict[str, Any]:
    """What a calibration depends on: machine, torch threads, library versions, engines."""
    torch = _torch()
    return {
        "format": FORMAT,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "covault": _version("covault"),
        "numpy": np.__version__,
        "torch": None if torch is None else str(torch.__version__),
        "engines": [e.NAME for e in engines],
    }


@functools.cache
def _cpu_model() -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Hardware", "cpu model", "Processor"):
                    return value.strip()
    return platform.processor() or platform.machine()


@functools.cache
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- measuring and fitting ---------------------------------------------------------------------


def _values(rows: int, cols: int) -> np.ndarray:
    """A fixed int64 pattern (timing input, not secret): the engines' speed ignores values."""
    idx = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    return (idx * np.int64(-7046029254386353131)) ^ (idx << 29)


def measure(engines: Sequence[ModuleType]) -> list[Sample]:
    """Seconds per product of each engine on ``SHAPES``: the best of ``ROUNDS`` rounds of
    ``REPS`` back-to-back runs per engine and shape (rounds interleave, so that a stall of the
    machine, such as another process taking a core from a multi-threaded GEMM, spoils few runs
    of each). An engine stops at the shape where its best rate so far projects it beyond
    ``SLOW`` seconds (it cannot win there), and when its runs have taken ``BUDGET`` seconds."""
    operands = {s: (_values(s[0], s[1]), _values(s[1], s[2])) for s in SHAPES}
    best: dict[tuple[str, tuple[int, int, int]], float] = {}
    spent = dict.fromkeys((e.NAME for e in engines), 0.0)
    for _ in range(ROUNDS):
        for engine in engines:
            for s in SHAPES:
                rates = [  # the fixed-cost shape says nothing of the rate
                    t / (m * k * n)
                    for (name, (m, k, n)), t in best.items()
                    if name == engine.NAME and (m, k, n) != SHAPES[0]
                ]
                if (rates and min(rates) * s[0] * s[1] * s[2] > SLOW) or spent[engine.NAME] > BUDGET:
                    break
                for _ in range(REPS):
                    t0 = time.perf_counter()
                    engine.matmul(*operands[s])
                    t = time.perf_counter() - t0
                    best[engine.NAME, s] = min(t, best.get((engine.NAME, s), math.inf))
                    spent[engine.NAME] += t
    return [(name, *s, t) for (name, s), t in best.items()]


def fit(engines: Sequence[ModuleType], samples: Sequence[Sample]) -> dict[str, Fit]:
    """Each engine's cost model from its samples (least relative squares, coefficients >= 0,
    the best of its candidate block sizes), valid below the work of the smallest shape it skipped
    that is larger than every shape it measured."""
    out = {}
    for engine in engines:
        mine = [s for s in samples if s[0] == engine.NAME]
        if not mine:
            continue
        t = np.array([s[4] for s in mine])
        done = {tuple(s[1:4]) for s in mine}
        largest = max(m * k * n for m, k, n in done)  # interpolates below, extrapolates no further
        skipped = (m * k * n for m, k, n in SHAPES if (m, k, n) not in done)
        limit = min((w for w in skipped if w > largest), default=math.inf)
        best: tuple[float, Fit] | None = None
        for blocks in engine.BLOCKS:
            x = np.array([engine.terms(m, k, n, blocks) for _, m, k, n, _ in mine]) / t[:, None]
            coef, err = _nonnegative_lstsq(x, np.ones(len(mine)))
            if best is None or err < best[0] * (1 - 1e-9):
                best = (err, Fit(tuple(blocks), tuple(float(c) for c in coef), float(limit)))
        if best is not None:
            out[engine.NAME] = best[1]
    return out


def _nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """``argmin |x c - y|`` over ``c >= 0`` and its squared error: the best unconstrained
    solution on a subset of the columns that comes out non-negative (few columns: all subsets)."""
    best_coef, best_err = np.zeros(x.shape[1]), float(y @ y)
    for size in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), size):
            sub = x[:, cols]
            if not sub.any():
                continue
            c = np.linalg.lstsq(sub, y, rcond=None)[0]
            if (c < 0).any():
                continue
            r = sub @ c - y
            err = float(r @ r)
            if err < best_err:
                best_coef = np.zeros(x.shape[1])
                best_coef[list(cols)] = c
                best_err = err
    return best_coef, best_err


# -- the cache file ----------------------------------------------------------------------------


def load(path: Path, key: dict[str, Any], engines: Sequence[ModuleType]) -> Calibration | None:
    """The calibration in ``path`` if it is whole and made for ``key``, else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["key"] != key:
            return None
        by_name = {e.NAME: e for e in engines}
        fits = {}
        for name, entry in data["fits"].items():
            blocks = tuple(int(b) for b in entry["blocks"])
            coef = tuple(float(c) for c in entry["coef"])
            engine = by_name[name]
            if blocks not in engine.BLOCKS or len(coef) != len(engine.terms(1, 1, 1, blocks)):
                return None
            if not all(math.isfinite(c) and c >= 0 for c in coef):
                return None
            limit = math.inf if entry["limit"] is None else float(entry["limit"])
            fits[name] = Fit(blocks, coef, limit)  # type: ignore[arg-type]
        samples = tuple((str(e), int(m), int(k), int(n), float(t)) for e, m, k, n, t in data["samples"])
        seconds = float(data["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Calibration(fits, samples, seconds, True, path) if fits else None


def store(path: Path, key: dict[str, Any], cal: Calibration) -> bool:
    """Write ``cal`` to ``path`` atomically; False (and nothing raised) if it cannot be written."""
    data = {
        "key": key,
        "fits": {
            name: {
                "blocks": list(f.blocks),
                "coef": list(f.coef),
                "limit": None if f.limit == math.inf else f.limit,
            }
            for name, f in cal.fits.items()
        },
        "samples": [list(s) for s in cal.samples],
        "seconds": cal.seconds,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
