"""The ring matmul engines chosen by measurement: the calibration cache (written, reused, renewed
when the machine or versions change, corrupt files tolerated), forced methods, exact results."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from covault import ring, ringmm
from covault.errors import ProtocolError
from covault.ringmm import calibrate

ENGINES = tuple(ringmm.ENGINES.values())
AVAILABLE = [name for name, e in ringmm.ENGINES.items() if e.available()]


def uniform(*shape: int) -> np.ndarray:
    return np.frombuffer(os.urandom(8 * int(np.prod(shape))), np.int64).reshape(shape).copy()


def synthetic(fastest: str):
    """A stand-in for :func:`calibrate.measure`: ``fastest`` 10x faster than the others on every
    shape (fixed cost 1 us, 1 ns per multiply-add otherwise); counts its calls."""

    def measure(engines):
        measure.calls += 1
        return [
            (e.NAME, m, k, n, (1e-6 + 1e-9 * m * k * n) / (10 if e.NAME == fastest else 1))
            for e in engines
            for m, k, n in calibrate.SHAPES
        ]

    measure.calls = 0
    return measure


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory of this test, and no calibration remembered in the process."""
    monkeypatch.setenv("COVAULT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("COVAULT_MATMUL", raising=False)
    calibrate.forget()
    yield tmp_path
    calibrate.forget()


def files(directory) -> list:
    return sorted(p for p in directory.iterdir() if p.name.startswith("matmul-"))


def test_first_use_measures_and_writes_the_cache(cache):
    cal = calibrate.calibration(ENGINES)
    assert not cal.loaded and cal.seconds > 0
    assert set(cal.fits) == set(AVAILABLE)
    (path,) = files(cache)
    assert path == cal.path and path.suffix == ".json"
    data = json.loads(path.read_text())
    key = data["key"]
    assert key["cpus"] == os.cpu_count() and key["cpu"] and key["numpy"] == np.__version__
    assert {"threads", "covault", "torch", "format"} <= set(key)
    # each model predicts what was measured, roughly (a busy machine spoils a few timings)
    for name, fit in cal.fits.items():
        ratios = [fit.predict(ringmm.ENGINES[e], m, k, n) / t for e, m, k, n, t in cal.samples if e == name]
        assert 0.5 < np.median(ratios) < 2, (name, ratios)


def test_a_cached_calibration_is_reused_without_timing(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "measure", synthetic("einsum"))
    first = calibrate.calibration(ENGINES)
    assert calibrate.measure.calls == 1 and not first.loaded
    assert calibrate.calibration(ENGINES) is first  # remembered in the process
    calibrate.forget()
    again = calibrate.calibration(ENGINES)  # as in a new process: read from the file
    assert calibrate.measure.calls == 1 and again.loaded
    assert again.fits == first.fits and again.samples == first.samples
    assert len(files(cache)) == 1


def test_the_choice_follows_the_calibration(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "measure", synthetic("einsum"))
    assert ringmm.choose(300, 300, 300) == "einsum"
    a, b = uniform(300, 300), uniform(300, 300)
    np.testing.assert_array_equal(ringmm.matmul(a, b), ringmm.matmul(a, b, method="int64"))
    # products that need no measurement are decided without it
    assert ringmm.choose(4, 8, 4) == "numpy"
    assert ringmm.choose(1, 1000, 1000) == "einsum"
    assert ringmm.choose(171, 171, 2) == "numpy"


@pytest.mark.parametrize("change", ["cpu", "threads", "versions"])
def test_a_new_machine_or_version_measures_again(cache, monkeypatch, change):
    import torch

    monkeypatch.setattr(calibrate, "measure", synthetic("int64"))
    calibrate.calibration(ENGINES)
    calibrate.forget()
    if change == "cpu":
        monkeypatch.setattr(calibrate, "_cpu_model", lambda: "Another CPU 9000")
    elif change == "versions":
        monkeypatch.setattr(calibrate, "_version", lambda dist: "99.0")
    else:
        monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    cal = calibrate.calibration(ENGINES)
    assert calibrate.measure.calls == 2 and not cal.loaded
    assert len(files(cache)) == 2
    key = json.loads(cal.path.read_text())["key"]
    assert key == calibrate.key(ENGINES, torch.get_num_threads())
    assert {
        "cpu": key["cpu"] == "Another CPU 9000",
        "threads": key["threads"] == 97,
        "versions": key["covault"] == "99.0",
    }[change]


def test_a_file_written_for_another_key_is_measured_again(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "measure", synthetic("int64"))
    path = calibrate.calibration(ENGINES).path
    data = json.loads(path.read_text())
    data["key"]["numpy"] = "0.0"
    path.write_text(json.dumps(data))
    calibrate.forget()
    assert not calibrate.calibration(ENGINES).loaded
    assert calibrate.measure.calls == 2
    assert json.loads(path.read_text())["key"]["numpy"] == np.__version__  # rewritten


def _negative(data):
    data["fits"]["int64"]["coef"][1] = -1.0


def _nan(data):
    data["fits"]["int64"]["coef"][0] = float("nan")


def _blocks(data):
    data["fits"]["int64"]["blocks"] = [3, 5]


def _short(data):
    data["fits"]["int64"]["coef"] = [1.0]


def _unknown(data):
    data["fits"]["quantum"] = data["fits"]["int64"]


def _no_samples(data):
    del data["samples"]


def _strings(data):
    data["fits"]["int64"]["coef"] = ["a", "b", "c"]


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'{"key": 1}',
        b"null",
        _negative,
        _nan,
        _blocks,
        _short,
        _unknown,
        _no_samples,
        _strings,
    ],
)
def test_a_corrupt_cache_file_is_measured_again_and_rewritten(cache, monkeypatch, damage):
    monkeypatch.setattr(calibrate, "measure", synthetic("int64"))
    path = calibrate.calibration(ENGINES).path
    if callable(damage):
        data = json.loads(path.read_text())
        damage(data)
        path.write_text(json.dumps(data))
    else:
        path.write_bytes(damage)
    calibrate.forget()
    cal = calibrate.calibration(ENGINES)
    assert not cal.loaded and calibrate.measure.calls == 2
    calibrate.forget()
    assert calibrate.calibration(ENGINES).loaded  # the rewritten file is whole


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("COVAULT_CACHE_DIR", str(blocker / "covault"))
    monkeypatch.setattr(calibrate, "measure", synthetic("int64"))
    calibrate.forget()
    try:
        cal = calibrate.calibration(ENGINES)
        assert not cal.loaded and cal.fits
        assert ringmm.choose(300, 300, 300) == "int64"
    finally:
        calibrate.forget()


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("COVAULT_CACHE_DIR", str(tmp_path / "mine"))
    assert calibrate.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("COVAULT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert calibrate.cache_dir() == tmp_path / "xdg" / "covault"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert calibrate.cache_dir() == tmp_path / ".cache" / "covault"


def test_concurrent_writers_leave_a_whole_file(cache, monkeypatch):
    """Processes starting together may all measure and write: every write replaces the file
    whole, so a reader sees one calibration or another, never a mix or a fragment."""
    monkeypatch.setattr(calibrate, "measure", synthetic("int64"))
    cal = calibrate.calibration(ENGINES)
    key = json.loads(cal.path.read_text())["key"]
    stop = threading.Event()
    seen, stored = [], []

    def write():
        while not stop.is_set():
            stored.append(calibrate.store(cal.path, key, cal))

    def read():
        for _ in range(300):
            seen.append(calibrate.load(cal.path, key, ENGINES))

    writers = [threading.Thread(target=write) for _ in range(3)]
    for t in writers:
        t.start()
    read()
    stop.set()
    for t in writers:
        t.join()
    assert all(s is not None and s.fits == cal.fits for s in seen)
    assert stored and all(stored)
    assert [p.name for p in cache.iterdir()] == [cal.path.name]  # no temporary file left


@pytest.mark.parametrize("method", ["numpy", "einsum", "int64", "int8"])
def test_a_forced_method_is_honoured(cache, monkeypatch, method):
    if method not in AVAILABLE:
        pytest.skip(f"no {method} engine here")
    engine = ringmm.ENGINES[method]
    used = []
    real = engine.matmul
    monkeypatch.setattr(engine, "matmul", lambda a, b: used.append((a.shape, b.shape)) or real(a, b))
    monkeypatch.setattr(calibrate, "measure", synthetic("numpy" if method != "numpy" else "einsum"))
    a, b = uniform(40, 50), uniform(50, 30)
    want = ringmm.matmul(a, b, method="int64" if method != "int64" else "numpy")
    used.clear()
    np.testing.assert_array_equal(ringmm.matmul(a, b, method=method), want)  # by argument
    assert used == [((40, 50), (50, 30))]
    monkeypatch.setenv("COVAULT_MATMUL", method.upper())  # by environment, for auto
    assert ringmm.choose(1000, 1000, 1000) == method and ringmm.choose(2, 2, 2) == method
    np.testing.assert_array_equal(ringmm.matmul(a, b), want)
    np.testing.assert_array_equal(ring.matmul(a, b), want)
    assert len(used) == 3
    other = "numpy" if method != "numpy" else "einsum"
    np.testing.assert_array_equal(ringmm.matmul(a, b, method=other), want)  # an argument wins
    assert len(used) == 3


def test_the_environment_must_name_a_method(monkeypatch):
    monkeypatch.setenv("COVAULT_MATMUL", "fastest")
    with pytest.raises(ProtocolError, match="COVAULT_MATMUL='fastest' is not a ring matmul method"):
        ringmm.matmul(uniform(2, 2), uniform(2, 2))
    monkeypatch.setenv("COVAULT_MATMUL", "auto")
    assert ringmm.choose(4, 8, 4) == "numpy"


@pytest.mark.parametrize("fastest", AVAILABLE)
def test_auto_is_exact_whichever_engine_the_calibration_prefers(cache, monkeypatch, fastest):
    monkeypatch.setattr(calibrate, "measure", synthetic(fastest))
    for m, k, n in [(40, 50, 30), (300, 200, 100), (64, 9000, 40)]:
        assert ringmm.choose(m, k, n) == fastest or ringmm._without_torch(m, k, n)
        a, b = uniform(m, k), uniform(k, n)
        for value in (-1, -(2**63), 0x7F7F_7F7F_7F7F_7F80):
            a[0] = value
            b[:, 0] = value
            want = ringmm.matmul(a, b, method="einsum")
            np.testing.assert_array_equal(ringmm.matmul(a, b), want)
    batched = uniform(3, 40, 50), uniform(3, 50, 30)
    np.testing.assert_array_equal(ringmm.matmul(*batched), ringmm.matmul(*batched, method="numpy"))


def test_prepare_loads_the_calibration(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "measure", synthetic("int64"))
    ring.load_matmul_engine()
    assert calibrate.measure.calls == 1 and len(files(cache)) == 1
    ring.load_matmul_engine()
    assert calibrate.measure.calls == 1


def test_fit_recovers_a_model_with_blocks():
    """The fit finds the block sizes and coefficients of timings made by a blocked engine."""
    engine = ringmm.ENGINES["int64"]
    truth = calibrate.Fit((16, 64), (1e-5, 7e-11, 2e-10))
    samples = [("int64", m, k, n, truth.predict(engine, m, k, n)) for m, k, n in calibrate.SHAPES]
    (fit,) = calibrate.fit([engine], samples).values()
    assert fit.blocks == (16, 64)
    np.testing.assert_allclose(fit.coef, truth.coef, rtol=1e-6, atol=1e-15)
    assert fit.limit == float("inf")
    # an engine that stopped early is not used beyond the shapes it was measured on
    (short,) = calibrate.fit([engine], samples[:3]).values()
    assert short.limit == np.prod(calibrate.SHAPES[3])
    assert short.predict(engine, 1000, 1000, 1000) == float("inf")


def test_a_doubtful_measurement_serves_its_process_only(cache, monkeypatch):
    """A calibration that took longer than it should (a busy machine) is not written: the next
    process measures again."""
    monkeypatch.setattr(calibrate, "measure", synthetic("int64"))
    monkeypatch.setattr(calibrate, "TRUSTED", 0.0)
    assert calibrate.calibration(ENGINES).fits
    assert files(cache) == []
    calibrate.forget()
    calibrate.calibration(ENGINES)
    assert calibrate.measure.calls == 2


@pytest.mark.processes
def test_party_threads_importing_torch_at_once_all_get_exact_products(tmp_path):
    """Three threads make their first torch-sized product at the same moment in a fresh
    interpreter (as the parties of covault.run on threads do): each waits for torch's import
    instead of reading a half-imported module."""
    import subprocess
    import sys

    code = """
import os, threading
import numpy as np
from covault import ringmm
a = np.frombuffer(os.urandom(8 * 128 * 30), np.int64).reshape(128, 30)
b = np.frombuffer(os.urandom(8 * 30 * 64), np.int64).reshape(30, 64)
want = a @ b
errors, start = [], threading.Barrier(3)
def party():
    start.wait()
    try:
        np.testing.assert_array_equal(ringmm.matmul(a, b), want)
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=party) for _ in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors or "ok")
"""
    env = dict(os.environ, COVAULT_CACHE_DIR=str(tmp_path))
    env.pop("COVAULT_MATMUL", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok", out.stdout


@pytest.mark.processes
def test_processes_starting_together_measure_once(tmp_path):
    """Party processes on an empty cache: one measures (2 s here) while the others wait for its
    file and read it, so they neither skew each other's timings nor repeat the work."""
    import subprocess
    import sys

    code = """
import time
from covault import ringmm
from covault.ringmm import calibrate
def measure(engines):
    time.sleep(2.0)
    return [(e.NAME, m, k, n, (1e-6 + 1e-9 * m * k * n)) for e in engines for m, k, n in calibrate.SHAPES]
calibrate.measure, calibrate.TRUSTED = measure, 100.0
print(calibrate.calibration(tuple(ringmm.ENGINES.values())).loaded)
"""
    env = dict(os.environ, COVAULT_CACHE_DIR=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    loaded = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(loaded) == ["False", "True", "True"], loaded


def test_a_shape_skipped_in_one_round_does_not_void_larger_measured_ones():
    # a busy machine can end an engine's budget before a small shape, after it measured a larger one:
    # the fit still predicts every shape it measured, and stops above the largest one
    engine = ringmm.ENGINES["numpy"]
    measured = [calibrate.SHAPES[0], calibrate.SHAPES[3], calibrate.SHAPES[4]]  # (4, 250, 500) skipped
    samples = [("numpy", m, k, n, 1e-9 * m * k * n + 1e-5) for m, k, n in measured]
    fit = calibrate.fit([engine], samples)["numpy"]
    for m, k, n in measured:
        assert np.isfinite(fit.predict(engine, m, k, n))
    assert fit.limit == min(m * k * n for m, k, n in calibrate.SHAPES if m * k * n > 500 * 8 * 500)
