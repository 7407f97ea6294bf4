"""Every estimator of ``covault.ml.ESTIMATORS`` against the estimator contract of
``covault.ml.base``, in the spirit of scikit-learn's ``check_estimator``.

Parametrised over the estimators (a new one in ``ESTIMATORS`` is covered without a change here)
and, for the secure ones, over both protocols: parameters declared by ``__init__`` and stored
unchanged, ``get_params`` / ``set_params`` / ``clone`` / ``repr`` round trips, nothing but the
parameters before ``fit``, ``fit`` returns the estimator and adds only attributes ending in
``_``, the shapes and dtypes of ``predict`` / ``predict_proba`` / ``score``, NotFittedError
naming the estimator, ShapeError / EncodingError for bad shapes and NaN, and every secure
estimator against its plaintext twin on a small separable data set: the same training accuracy
(classifiers; predictions agree on all but at most one of the 48 rows) or coefficients within
2% (+ 1e-3) and the intercept within 0.01 of the twin's (regression). Small data, 2 epochs,
the in-process transport.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import covault
from covault import ml
from covault.errors import EncodingError, ShapeError
from covault.ml import NotFittedError, ParameterError, clone, is_classifier
from tests.helpers import IDS, VARIANTS, owner_value, run_both

SECURE = [c for c in ml.ESTIMATORS if hasattr(c, "_reference")]
TWINS = [c for c in ml.ESTIMATORS if c not in SECURE]
# Small and fast; each applies to the estimators that have the parameter.
FAST = {"epochs": 2, "batch_size": 16, "learning_rate": 0.2, "hidden": (4,), "momentum": 0.5, "seed": 1}
N, D = 48, 3


def fast(cls: type, **kw) -> dict:
    names = cls.param_names()
    return {**{k: v for k, v in FAST.items() if k in names}, **kw}


def data(cls: type) -> tuple[np.ndarray, np.ndarray]:
    """48 x 3 rows: labels of a linear rule with a margin (classifiers), a linear target (regression)."""
    rng = np.random.default_rng(7)  # test data only
    x = rng.normal(size=(4 * N, D)) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 2.0, -1.0])
    z = (x - np.array([0.0, 2.0, -1.0])) @ np.array([1.5, -0.6, 2.0])
    x, z = x[np.abs(z) > 0.8][:N], z[np.abs(z) > 0.8][:N]
    if is_classifier(cls):
        return x, (z > 0).astype(np.float64)
    return x, x @ np.array([2.0, -1.0, 0.5]) + 1.0


def enc(a):
    """Values as the fixed-point encoding stores them (16 fractional bits)."""
    return np.round(np.asarray(a, dtype=float) * 2**16) / 2**16


def ids(classes):
    return [c.__name__ for c in classes]


# -- the base class --------------------------------------------------------------------------------
def test_an_init_with_var_keywords_breaks_the_contract_when_the_class_is_defined():
    with pytest.raises(ParameterError, match=r"Hidden.__init__ takes \*\*kw: an estimator declares every"):

        class Hidden(ml.Estimator):
            def __init__(self, **kw):
                self.kw = kw


def test_estimator_valued_parameters_nest():
    class Wrapper(ml.Estimator):
        def __init__(self, *, inner: ml.Estimator | None = None, scale: float = 1.0):
            self._store_params(locals())

    est = Wrapper(inner=ml.ReferenceLogisticRegression(epochs=2))
    params = est.get_params()
    assert params["inner__epochs"] == 2 and "inner__C" not in est.get_params(deep=False)
    est.set_params(inner__epochs=3, scale=2.0)
    assert est.inner.epochs == 3 and est.scale == 2.0
    copy = clone(est)
    assert copy.inner is not est.inner and copy.get_params(deep=True)["inner__epochs"] == 3
    with pytest.raises(ParameterError, match="has no parameter 'scale__x'"):
        est.set_params(scale__x=1)
    assert repr(est) == "Wrapper(inner=ReferenceLogisticRegression(epochs=3), scale=2.0)"


# -- parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ml.ESTIMATORS, ids=ids(ml.ESTIMATORS))
def test_init_declares_keyword_parameters_with_defaults(cls):
    assert issubclass(cls, ml.Estimator)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == list(cls.param_names()) and params
    for p in params:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty, p


@pytest.mark.parametrize("cls", ml.ESTIMATORS, ids=ids(ml.ESTIMATORS))
def test_init_stores_parameters_unchanged_and_nothing_else(cls):
    defaults = {p.name: p.default for p in list(inspect.signature(cls.__init__).parameters.values())[1:]}
    est = cls()
    assert vars(est).keys() == defaults.keys()
    assert all(getattr(est, k) is v for k, v in defaults.items())
    given = {k: np.int64(v) if type(v) is int else v for k, v in fast(cls).items()}  # kept as given
    est = cls(**given)
    assert vars(est).keys() == defaults.keys()
    assert all(getattr(est, k) is v for k, v in given.items())


@pytest.mark.parametrize("cls", ml.ESTIMATORS, ids=ids(ml.ESTIMATORS))
def test_get_params_round_trips_through_set_params_clone_and_repr(cls):
    est = cls(**fast(cls))
    params = est.get_params()
    assert params == est.get_params(deep=False) and list(params) == list(cls.param_names())
    other = cls()
    assert other.set_params(**params) is other
    assert other.get_params() == params
    copy = clone(est)
    assert type(copy) is cls and copy is not est and copy.get_params() == params
    assert repr(cls()) == f"{cls.__name__}()"
    assert all(f"{k}=" in repr(est) for k, v in fast(cls).items() if v != getattr(cls(), k))
    assert eval(repr(est), vars(ml)).get_params() == params


@pytest.mark.parametrize("cls", ml.ESTIMATORS, ids=ids(ml.ESTIMATORS))
def test_unknown_and_invalid_parameters(cls):
    est = cls()
    with pytest.raises(ParameterError, match=rf"{cls.__name__} has no parameter 'bogus'; valid parameters: "):
        est.set_params(bogus=1)
    with pytest.raises(ValueError, match=", ".join(cls.param_names())):
        est.set_params(epochs=3, bogus=1)
    assert est.get_params() == cls().get_params()
    with pytest.raises(TypeError):
        cls(bogus=1)
    if "epochs" in cls.param_names():
        with pytest.raises(ValueError, match="epochs must be a positive integer"):
            cls(epochs=0)
        with pytest.raises(ValueError, match="epochs must be a positive integer"):
            est.set_params(batch_size=8, epochs=0)
        assert est.get_params() == cls().get_params()  # none of them changed


@pytest.mark.parametrize("cls", SECURE, ids=ids(SECURE))
def test_secure_estimator_has_a_plaintext_twin_with_the_same_parameters(cls):
    twin = cls._reference
    assert twin in TWINS and is_classifier(twin) == is_classifier(cls)
    assert twin.param_names() == cls.param_names()


@pytest.mark.parametrize(
    "cls",
    SECURE,
    ids=ids(SECURE),
)
def test_plaintext_twin_has_the_same_defaults(cls):
    assert cls._reference().get_params() == cls().get_params()


# -- plaintext twins -------------------------------------------------------------------------------
def check_fitted_predictions(cls, est, n, pred, proba, score, n_classes=2):
    """The dtypes and shapes every estimator's outputs have (revealed, for the secure ones)."""
    if is_classifier(cls):
        assert pred.shape == (n,) and np.issubdtype(pred.dtype, np.integer)
        assert set(np.unique(pred)) <= set(range(n_classes))
        assert proba.shape == (n, n_classes) and proba.dtype == np.float64
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-3)
        assert type(score) is float and 0.0 <= score <= 1.0
    else:
        assert pred.shape == (n,) and pred.dtype == np.float64
        assert proba is None and not hasattr(cls, "predict_proba")
        assert type(score) is float and score <= 1.0


@pytest.mark.parametrize("cls", TWINS, ids=ids(TWINS))
def test_plaintext_twin_fit_predict_contract(cls):
    x, y = data(cls)
    est = cls(**fast(cls))
    for method in ("predict", "decision_function", "predict_proba"):
        if hasattr(est, method):
            with pytest.raises(NotFittedError, match=rf"{cls.__name__} is not fitted"):
                getattr(est, method)(x)
    with pytest.raises(NotFittedError, match=cls.__name__):
        est.score(x, y)
    params = est.get_params()
    assert est.fit(x, y) is est
    assert est.get_params() == params  # fit changes no parameter
    learned = set(vars(est)) - set(params)
    assert learned and all(a.endswith("_") and not a.startswith("_") for a in learned)
    assert est.n_features_in_ == D
    proba = est.predict_proba(x) if hasattr(est, "predict_proba") else None
    check_fitted_predictions(cls, est, N, est.predict(x), proba, est.score(x, y))
    assert vars(clone(est)).keys() == params.keys()  # the clone is unfitted


@pytest.mark.parametrize("cls", TWINS, ids=ids(TWINS))
def test_plaintext_twin_rejects_bad_shapes_and_nan(cls):
    x, y = data(cls)
    est = cls(**fast(cls))
    with pytest.raises(ShapeError):
        est.fit(x[:, 0], y)
    with pytest.raises(ShapeError):
        est.fit(x, y[:-1])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(
        EncodingError, match=rf"{cls.__name__}: X has a NaN or infinite value at index \(3, 1"
    ):
        est.fit(bad, y)
    with pytest.raises(EncodingError, match="y has a NaN"):
        est.fit(x, np.where(np.arange(N) == 5, np.inf, y))
    est.fit(x, y)
    with pytest.raises(ShapeError, match=f"model fitted on {D} features"):
        est.predict(x[:, :2])
    with pytest.raises(ShapeError):
        est.predict(x[0])
    with pytest.raises(EncodingError):
        est.predict(bad)
    with pytest.raises(ShapeError):
        est.score(x, y[:-1])


# -- secure estimators -----------------------------------------------------------------------------
def secure_program(cls, x, y):
    """Checks inside one session (every party raises alike: the checks are local); returns the
    revealed outputs and those of the public copy for the assertions outside."""

    def prog(s):
        a = s.compute_parties[0]
        xs = s.input(owner_value(s, x), owner=a)
        ys = s.input(owner_value(s, y), owner=a)
        wide = s.input(owner_value(s, np.c_[x, x[:, :1]]), owner=a)
        est = cls(**fast(cls, shuffle="none"))
        with pytest.raises(NotFittedError, match=rf"{cls.__name__} is not fitted"):
            est.predict(xs)
        with pytest.raises(NotFittedError, match=cls.__name__):
            est.reveal()
        with pytest.raises(TypeError):
            est.fit(x, ys)
        with pytest.raises(ShapeError):
            est.fit(xs, ys[: N // 2])
        with pytest.raises(ShapeError):
            est.fit(xs[:, 0], ys)
        params = est.get_params()
        assert vars(est).keys() == params.keys()
        assert est.fit(xs, ys) is est
        assert est.get_params() == params
        learned = set(vars(est)) - set(params)
        assert learned and all(a.endswith("_") and not a.startswith("_") for a in learned)
        assert est.n_features_in_ == D
        with pytest.raises(ShapeError, match=f"model fitted on {D} features"):
            est.predict(wide)
        pred = est.predict(xs).reveal()
        proba = est.predict_proba(xs).reveal() if hasattr(est, "predict_proba") else None
        score = est.score(xs, ys)
        public = est.reveal()  # None at the 2pc dealer
        assert vars(clone(est)).keys() == params.keys()
        if public is None:
            return None
        assert type(public) is cls._reference and public.get_params() == params
        coef = (getattr(public, "coef_", None), getattr(public, "intercept_", None))
        return pred, proba, score, public.predict(x), *coef

    return prog


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
@pytest.mark.parametrize("cls", SECURE, ids=ids(SECURE))
def test_secure_estimator_contract_and_its_twin(cls, proto):
    x, y = data(cls)
    pred, proba, score, public_pred, coef, intercept = run_both(secure_program(cls, x, y), proto)
    check_fitted_predictions(cls, None, N, pred, proba, score)
    twin = cls._reference(**fast(cls, shuffle="none")).fit(enc(x), enc(y))
    if is_classifier(cls):
        assert score == twin.score(x, y)
        assert np.sum(pred != twin.predict(x)) <= 1 and np.sum(pred != public_pred) <= 1
    else:
        np.testing.assert_allclose(coef, twin.coef_, rtol=0.02, atol=1e-3)
        assert intercept == pytest.approx(twin.intercept_, abs=0.01)
        assert score == pytest.approx(twin.score(x, y), abs=2e-3)


@pytest.mark.parametrize("cls", SECURE, ids=ids(SECURE))
def test_secure_estimator_input_with_nan_raises_encoding_error(cls):
    x, y = data(cls)
    bad = x.copy()
    bad[2, 0] = np.nan

    def prog(s):
        a = s.compute_parties[0]
        xs = s.input(owner_value(s, bad), owner=a)  # the owner's encoding refuses it
        return cls(**fast(cls)).fit(xs, s.input(owner_value(s, y), owner=a))

    with pytest.raises(EncodingError, match=r"NaN or infinite value at index \(2, 0\)"):
        covault.run(prog, 2, "2pc")
