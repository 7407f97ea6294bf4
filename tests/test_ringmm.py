"""Exactness of the ring matmul engines (mod 2^64) against Python-integer arithmetic."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import covault
from covault import ringmm
from covault.errors import EncodingError, ProtocolError, ShapeError
from tests.helpers import ULP, dealt, owner_value, run_both

INT8 = ringmm.int8_available()
ENGINES = [
    "numpy",
    "einsum",
    "int64",
    pytest.param("int8", marks=pytest.mark.skipif(not INT8, reason="no int8")),
]
ALL = ["auto", *ENGINES]
TORCH = ("int8", "int64") if INT8 else ("int64",)
MIN, MAX = -(2**63), 2**63 - 1
# digits (base 256, signed, see covault/ringmm/int8.py) all -128 / all 127, the two int64 extremes, -1
EXTREMES = [0x7F7F_7F7F_7F7F_7F80, 0x7F7F_7F7F_7F7F_7F7F, MIN, MAX, -1]


def uniform(*shape: int) -> np.ndarray:
    """Uniform ring elements from the OS CSPRNG, like secret shares."""
    return np.frombuffer(os.urandom(8 * int(np.prod(shape))), np.int64).reshape(shape).copy()


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with Python integers, reduced to int64 two's complement."""
    exact = np.matmul(np.asarray(a).astype(object), np.asarray(b).astype(object))
    wrap = np.vectorize(lambda v: (int(v) + 2**63) % 2**64 - 2**63, otypes=[object])
    return np.asarray(wrap(exact), dtype=np.int64)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 4), (7, 33, 1), (1, 40, 9), (17, 64, 65), (40, 130, 24)])
def test_uniform_values_match_python_ints(method, shape):
    m, k, n = shape
    a, b = uniform(m, k), uniform(k, n)
    np.testing.assert_array_equal(ringmm.matmul(a, b, method=method), reference(a, b))


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("value", EXTREMES)
def test_extreme_values(method, value):
    a = np.full((4, 300), value, np.int64)
    b = np.full((300, 3), value, np.int64)
    b[::2] = MIN
    np.testing.assert_array_equal(ringmm.matmul(a, b, method=method), reference(a, b))


@pytest.mark.skipif(not INT8, reason="no int8 engine on this machine")
@pytest.mark.parametrize("k", [ringmm.K_CHUNK - 1, ringmm.K_CHUNK, ringmm.K_CHUNK + 1])
def test_int8_at_the_chunk_bound(k):
    """Worst-case digit sums at the largest inner size of one int8 pass, and just past it."""
    for value in EXTREMES[:3]:
        a = np.full((3, k), value, np.int64)
        b = np.full((k, 2), EXTREMES[0], np.int64)
        b[:, 1] = value
        np.testing.assert_array_equal(ringmm.matmul(a, b, method="int8"), reference(a, b))
    a, b = uniform(3, k), uniform(k, 2)
    np.testing.assert_array_equal(ringmm.matmul(a, b, method="int8"), reference(a, b))


@pytest.mark.parametrize("method", ["auto", "int64", *(["int8"] if INT8 else [])])
def test_moderate_uniform_against_torch(method):
    """Larger uniform products (several row tiles in the int8 engine) against torch int64."""
    a, b = uniform(300, 257), uniform(257, 3600)
    want = ringmm.matmul(a, b, method="int64")
    np.testing.assert_array_equal(ringmm.matmul(a, b, method=method), want)
    np.testing.assert_array_equal(want[:2], reference(a[:2], b))


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((6,), (6, 4)),
        ((5, 6), (6,)),
        ((6,), (6,)),
        ((2, 3, 5, 6), (6, 4)),
        ((5, 6), (2, 6, 4)),
        ((2, 1, 5, 6), (3, 6, 4)),
        ((3, 6), (2, 3, 6, 1)),
        ((4,), (2, 4, 3)),
        ((2, 3, 4), (4,)),
    ],
)
def test_numpy_matmul_shapes(method, sa, sb):
    a, b = uniform(*sa), uniform(*sb)
    got = ringmm.matmul(a, b, method=method)
    want = reference(a, b)
    assert got.shape == np.matmul(a, b).shape
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", ALL)
def test_empty_dimensions(method):
    assert ringmm.matmul(uniform(0, 5), uniform(5, 3), method=method).shape == (0, 3)
    np.testing.assert_array_equal(
        ringmm.matmul(uniform(4, 0), uniform(0, 3), method=method), np.zeros((4, 3))
    )
    assert ringmm.matmul(uniform(2, 0, 4, 5), uniform(5, 3), method=method).shape == (2, 0, 4, 3)


@pytest.mark.parametrize("method", ALL)
def test_views_read_only_and_other_integer_dtypes(method):
    a = uniform(9, 12)
    b = uniform(12, 7)
    ro = np.frombuffer(b.tobytes(), np.int64).reshape(12, 7)  # read-only buffer, like a received share
    np.testing.assert_array_equal(ringmm.matmul(a.T.T[:, ::-1], ro, method=method), reference(a[:, ::-1], b))
    np.testing.assert_array_equal(
        ringmm.matmul(a[::2], b[:, 1::2], method=method), reference(a[::2], b[:, 1::2])
    )
    u = a.view(np.uint64)
    np.testing.assert_array_equal(ringmm.matmul(u, b, method=method), reference(a, b))
    small = np.arange(12, dtype=np.int8).reshape(3, 4)
    np.testing.assert_array_equal(ringmm.matmul(small, small.T, method=method), reference(small, small.T))


def test_bad_input_raises():
    with pytest.raises(ShapeError, match="inner sizes"):
        ringmm.matmul(uniform(2, 3), uniform(4, 2))
    with pytest.raises(ShapeError, match="at least one dimension"):
        ringmm.matmul(np.int64(3), uniform(2))
    with pytest.raises(ShapeError, match="do not broadcast"):
        ringmm.matmul(uniform(2, 3, 4), uniform(5, 4, 2))
    with pytest.raises(EncodingError, match="float64"):
        ringmm.matmul(np.ones((2, 2)), uniform(2, 2))
    with pytest.raises(ProtocolError, match="unknown ring matmul method"):
        ringmm.matmul(uniform(2, 2), uniform(2, 2), method="fast")


def test_choose_picks_a_known_engine():
    assert ringmm.choose(4, 8, 4) == "numpy"
    assert ringmm.choose(1, 1000, 1000) == "einsum"
    assert ringmm.choose(5000, 1000, 1) == "einsum"
    assert ringmm.choose(1000, 1000, 1000) in TORCH  # whichever this machine measured faster
    assert isinstance(ringmm.int8_available(), bool)


extreme_or_any = st.one_of(st.sampled_from([*EXTREMES, 0, 1]), st.integers(MIN, MAX))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 6),
    k=st.integers(1, 40),
    n=st.integers(1, 6),
    method=st.sampled_from(["auto", "numpy", "einsum", "int64", *(["int8"] if INT8 else [])]),
    data=st.data(),
)
def test_property_matches_python_ints(m, k, n, method, data):
    vals = data.draw(st.lists(extreme_or_any, min_size=(m + n) * k, max_size=(m + n) * k))
    a = np.array(vals[: m * k], np.int64).reshape(m, k)
    b = np.array(vals[m * k :], np.int64).reshape(k, n)
    np.testing.assert_array_equal(ringmm.matmul(a, b, method=method), reference(a, b))


def _secure_program(s):
    gen = np.random.default_rng(11)  # test data
    x, w = gen.uniform(-2, 2, (128, 400)), gen.uniform(-1, 1, (400, 256))
    a = s.input(owner_value(s, x), owner=s.compute_parties[0])
    b = s.input(owner_value(s, w, s.compute_parties[1]), owner=s.compute_parties[1])
    got, got_public = (a @ b).reveal(), (a @ w).reveal()
    return None if got is None else (got, got_public, x @ w)


def _check_secure(res):
    got, got_public, want = res
    np.testing.assert_allclose(got, want, atol=3000 * ULP)
    np.testing.assert_allclose(got_public, want, atol=3000 * ULP)


def test_secure_matmul_on_the_fast_path(proto):
    """A fixed-point secure matmul large enough that ``auto`` uses a torch engine."""
    if not dealt(proto):  # the engines' local products are the same; the triple is GBs of OT
        pytest.skip("a 128x400x256 matrix triple from OT sends 6.8 GB; ot triples: tests/test_provider_ot.py")
    assert ringmm.choose(128, 400, 256) in TORCH
    _check_secure(run_both(_secure_program, proto))


@pytest.mark.processes
def test_secure_matmul_over_tcp():
    res = covault.run(_secure_program, 2, "2pc", transport="tcp")
    assert res["dealer"] is None
    _check_secure(res["p0"])
    np.testing.assert_array_equal(res["p0"][0], res["p1"][0])


NO_TORCH = """
import sys
import numpy as np
from covault import ringmm
from covault.jobs import run_local
from covault.jobs.demo import make_breast_cancer_job

a = np.arange(171 * 171, dtype=np.int64).reshape(171, 171)
ringmm.matmul(a, a[:, :2])                                  # numpy's (AUC's product)
ringmm.matmul(a[:, :30], np.ones((30, 1), np.int64))        # matrix-vector
run_local(make_breast_cancer_job("job"), transport="local", progress=False)   # a linear job
print("torch" in sys.modules)
"""


def test_products_numpy_serves_best_never_import_torch(tmp_path):
    """A job of matrix-vector and small products (logistic regression) starts without torch:
    its import, the calibration and the int8 self-check (seconds of CPU per party) are paid only
    by products where the int8 or torch int64 engine can win."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_large_products_still_choose_a_torch_engine():
    assert ringmm.choose(1000, 1000, 1000) in TORCH
    assert ringmm.choose(171, 171, 2) == "numpy"
    assert ringmm.choose(10_000, 30, 1) == "einsum"
