"""numpy functions and ufuncs on secret tensors, against the same numpy calls in plaintext."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from tests.helpers import owner_value, run_both

ULP = 2.0**-16
X = np.array([[1.5, -2.25, 3.0, 0.5], [4.0, -1.0, 0.25, -3.5], [2.0, 2.5, -0.75, 1.0]])
Y = np.array([[0.5, 1.0, -3.0, 2.0], [3.0, -4.0, 0.5, -2.0], [1.0, 2.5, -1.0, 0.0]])
A = np.array([0.1, -0.2, 0.3, -0.4])


def _xy(s):
    a, b = s.compute_parties[0], s.compute_parties[-1]
    return s.input(owner_value(s, X, a), owner=a), s.input(owner_value(s, Y, b), owner=b)


CASES = {
    "mean": (lambda x, y: np.mean(x), lambda x, y: np.mean(x)),
    "mean-axis": (lambda x, y: np.mean(x, axis=0), lambda x, y: np.mean(x, axis=0)),
    "sum-keepdims": (
        lambda x, y: np.sum(x, axis=1, keepdims=True),
        lambda x, y: np.sum(x, axis=1, keepdims=True),
    ),
    "var": (lambda x, y: np.var(x), lambda x, y: np.var(x)),
    "var-ddof": (lambda x, y: np.var(x, axis=1, ddof=1), lambda x, y: np.var(x, axis=1, ddof=1)),
    "std": (lambda x, y: np.std(x, axis=0), lambda x, y: np.std(x, axis=0)),
    "method-var": (lambda x, y: x.var(axis=0), lambda x, y: x.var(axis=0)),
    "method-std": (lambda x, y: x.std(), lambda x, y: x.std()),
    "maximum": (lambda x, y: np.maximum(x, y), np.maximum),
    "minimum": (lambda x, y: np.minimum(x, y), np.minimum),
    "maximum-public": (lambda x, y: np.maximum(x, 0.5), lambda x, y: np.maximum(x, 0.5)),
    "minimum-public-left": (lambda x, y: np.minimum(A, x), lambda x, y: np.minimum(A, x)),
    "max": (lambda x, y: np.max(x, axis=1), lambda x, y: np.max(x, axis=1)),
    "amin": (lambda x, y: np.amin(x), lambda x, y: np.amin(x)),
    "add-array-left": (lambda x, y: A + x, lambda x, y: A + x),
    "sub-array-left": (lambda x, y: A - x, lambda x, y: A - x),
    "np-subtract": (lambda x, y: np.subtract(A, y), lambda x, y: np.subtract(A, y)),
    "multiply": (lambda x, y: np.multiply(x, y), np.multiply),
    "matmul-left": (lambda x, y: np.ones((2, 3)) @ x, lambda x, y: np.ones((2, 3)) @ x),
    "dot": (lambda x, y: np.dot(x, y.T), lambda x, y: np.dot(x, y.T)),
    "less-left": (lambda x, y: A < x, lambda x, y: (A < x).astype(np.int64)),
    "greater-equal": (
        lambda x, y: np.greater_equal(x, y),
        lambda x, y: np.greater_equal(x, y).astype(np.int64),
    ),
    "abs": (lambda x, y: np.abs(x), lambda x, y: np.abs(x)),
    "negative": (lambda x, y: -x, lambda x, y: -x),
    "square": (lambda x, y: np.square(x), lambda x, y: np.square(x)),
    "pow-0": (lambda x, y: x**0, lambda x, y: x**0),
    "pow-1": (lambda x, y: x**1, lambda x, y: x**1),
    "pow-3": (lambda x, y: x**3, lambda x, y: x**3),
    "pow-5": (lambda x, y: (x / 4) ** 5, lambda x, y: (x / 4) ** 5),
    "np-power": (lambda x, y: np.power(x, 2), lambda x, y: np.power(x, 2)),
    "exp": (lambda x, y: np.exp(x / 4), lambda x, y: np.exp(x / 4)),
    "add-reduce": (lambda x, y: np.add.reduce(x), lambda x, y: np.add.reduce(x)),
    "add-reduce-all": (lambda x, y: np.add.reduce(x, axis=None), lambda x, y: np.add.reduce(x, axis=None)),
    "mean-positional": (
        lambda x, y: np.mean(x, 0, None, None, True),
        lambda x, y: np.mean(x, 0, None, None, True),
    ),
    "std-positional": (
        lambda x, y: np.std(x, None, None, None, 1),
        lambda x, y: np.std(x, None, None, None, 1),
    ),
    "max-axis-none": (lambda x, y: np.max(x, None), lambda x, y: np.max(x, None)),
    "concatenate-public": (
        lambda x, y: np.concatenate([x, np.ones((1, 4))]),
        lambda x, y: np.concatenate([x, np.ones((1, 4))]),
    ),
    "concatenate": (lambda x, y: np.concatenate([x, y], axis=1), lambda x, y: np.concatenate([x, y], axis=1)),
    "stack": (lambda x, y: np.stack([x, y]), lambda x, y: np.stack([x, y])),
    "transpose": (lambda x, y: np.transpose(x), lambda x, y: np.transpose(x)),
    "reshape": (lambda x, y: np.reshape(x, (4, 3)), lambda x, y: np.reshape(x, (4, 3))),
    "where": (lambda x, y: np.where(x > y, x, y), lambda x, y: np.where(x > y, x, y)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_calls_match_plaintext(proto, name):
    secure, plain = CASES[name]

    def prog(s):
        x, y = _xy(s)
        return secure(x, y).reveal()

    got = run_both(prog, proto)
    want = plain(X, Y)
    tol = 1e-3 if name in ("std", "method-std", "std-positional", "exp") else 8 * ULP
    np.testing.assert_allclose(got, want, atol=tol, rtol=1e-4 if name == "exp" else 0)


def test_shape_queries(proto):
    def prog(s):
        x, _ = _xy(s)
        return np.shape(x), np.ndim(x), np.size(x)

    assert run_both(prog, proto) == ((3, 4), 2, 12)


REFUSED = {
    "sort": (lambda x: np.sort(x), "no secure sort"),
    "argmax": (lambda x: np.argmax(x), r"SecretTensor.argmax\(\)"),
    "median": (lambda x: np.median(x), "median"),
    "clip": (lambda x: np.clip(x, 0, 1), r"covault.maximum"),
    "mean-dtype": (
        lambda x: np.mean(x, dtype=np.float32),
        r"numpy.mean on secret tensors takes no \['dtype'\]",
    ),
    "sum-out": (lambda x: np.sum(x, out=np.zeros(4)), r"takes no \['out'\]"),
    "mean-positional-dtype": (
        lambda x: np.mean(x, 0, np.float32),
        r"numpy.mean on secret tensors takes no \['dtype'\]",
    ),
    "asarray": (lambda x: np.asarray(x), "cannot become a numpy array"),
    "float-power": (lambda x: x**0.5, r"x \*\* k needs an integer"),
    "negative-power": (lambda x: x**-1, r"x \*\* k needs an integer"),
    "sin": (lambda x: np.sin(x), "numpy.sin is not supported on secret tensors"),
    "multiply-accumulate": (lambda x: np.multiply.accumulate(x), "multiply.accumulate"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unsupported_numpy_calls_name_the_alternative(proto, name):
    call, message = REFUSED[name]

    def prog(s):
        x, _ = _xy(s)
        call(x)

    with pytest.raises(TypeError, match=message):
        run_both(prog, proto)


def prog_numpy_tcp(s):
    x, y = _xy(s)
    return np.mean(x).reveal(), np.maximum(x, y).reveal(), (x**3).reveal(), np.var(x, axis=0).reveal()


@pytest.mark.processes
@pytest.mark.parametrize(("name", "n"), [("2pc", 2), ("rep3", 3)])
def test_numpy_calls_over_tcp(name, n):
    mean, mx, cube, var = covault.run(prog_numpy_tcp, n, name, transport="tcp")["p0"]
    np.testing.assert_allclose(mean, X.mean(), atol=8 * ULP)
    np.testing.assert_allclose(mx, np.maximum(X, Y), atol=8 * ULP)
    np.testing.assert_allclose(cube, X**3, atol=8 * ULP)
    np.testing.assert_allclose(var, X.var(axis=0), atol=8 * ULP)


def test_joining_integer_tensors_with_public_integers_keeps_them_integers(proto):
    def prog(s):
        a = s.compute_parties[0]
        n = s.input(owner_value(s, np.array([3, -4])), owner=a, integer=True)
        joined = np.concatenate([n, np.array([40_000])])
        try:
            np.concatenate(t for t in [n])
            gen = "no error"
        except TypeError as e:
            gen = str(e)
        return joined.frac, joined.reveal(), gen

    frac, joined, gen = run_both(prog, proto)
    assert frac == 0
    np.testing.assert_array_equal(joined, [3, -4, 40_000])
    assert "numpy.concatenate" in gen
