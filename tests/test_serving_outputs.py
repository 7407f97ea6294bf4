"""SecretModel.forward's outputs (scores, logits, decision) against the float64 model."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault.ops import fss as fss_gates
from covault.serving.model import SecretModel, _fss
from covault.serving.store import ModelStoreError

RNG = np.random.default_rng(3)
X = RNG.normal(0, 1, (60, 5))
W1, B1 = RNG.normal(0, 0.4, (5, 8)), RNG.normal(0, 0.1, 8)
W3, B3 = RNG.normal(0, 0.6, (8, 3)), RNG.normal(0, 0.1, 3)
W, B = RNG.normal(0, 0.6, (5, 1)), RNG.normal(0, 0.1, 1)
MLP = [{"op": "linear", "in": 5, "out": 8}, {"op": "relu"}]
MODELS = {
    "mlp3": ("mlp", [*MLP, {"op": "linear", "in": 8, "out": 3}, {"op": "softmax"}], [W1, B1, W3, B3]),
    "mlp2": (
        "mlp",
        [*MLP, {"op": "linear", "in": 8, "out": 2}, {"op": "softmax"}],
        [W1, B1, W3[:, :2], B3[:2]],
    ),
    "lr": ("logistic_regression", [{"op": "linear", "in": 5, "out": 1}, {"op": "sigmoid"}], [W, B]),
}
CASES = [("scores", None), ("logits", None), ("decision", None), ("decision", 0.3), ("decision", 0.8)]


def plain_logits(name: str, x: np.ndarray = X) -> np.ndarray:
    if name == "lr":
        return x @ W + B
    _, _, (w1, b1, w2, b2) = MODELS[name]
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def plain_answer(name: str, output: str, threshold: float | None, x: np.ndarray = X) -> np.ndarray:
    z = plain_logits(name, x)
    p = 1 / (1 + np.exp(-z)) if name == "lr" else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    if output == "logits":
        return z
    if output == "scores":
        return p
    if name == "mlp3":
        return z.argmax(axis=1)
    return (p[:, -1] > (0.5 if threshold is None else threshold)).astype(np.int64)


def program(s):
    owner = s.compute_parties[0]

    def secret(v):
        return s.input(v if s.party == owner else None, owner=owner)

    x, out = secret(X), {}
    for name, (kind, layers, weights) in MODELS.items():
        model = SecretModel(name, kind, layers, [secret(v) for v in weights])
        for output, threshold in CASES:
            if threshold is not None and name == "mlp3":
                continue
            out[name, output, threshold] = model.forward(x, output=output, threshold=threshold).reveal()
    return out


@pytest.mark.parametrize("protocol", ["2pc", "rep3"])
def test_outputs_match_the_plaintext_model(protocol):
    res = covault.run(program, 2 if protocol == "2pc" else 3, protocol)
    out = res[next(iter(res))]
    assert len(out) == 13
    for (name, output, threshold), got in out.items():
        want = plain_answer(name, output, threshold)
        if output == "decision":
            assert got.shape == (len(X),) and got.dtype.kind == "i"
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {threshold}")
        else:
            tol = 1e-3 if output == "scores" else 2e-4  # scores: the FSS sigmoid (2pc, small tensors)
            np.testing.assert_allclose(got, want.reshape(got.shape), atol=tol, err_msg=f"{name} {output}")


@pytest.mark.parametrize("rows", [1, 4])
def test_small_batches_take_the_fss_gates_and_match_the_plaintext_model(rows):
    """2pc, 1 and 4 rows (at most FSS_ELEMENTS per gate): the ReLU, sigmoid and decision inside
    forward take the FSS gates (fss='all': fewer rounds than fss='off') and match plaintext."""
    x = X[:rows]

    def prog(s):
        owner = s.compute_parties[0]

        def secret(v):
            return s.input(v if s.party == owner else None, owner=owner)

        xs, out, rounds = secret(x), {}, {}
        assert _fss(secret(np.zeros((rows, 8))), "all", "relu") is fss_gates
        for name, (kind, layers, weights) in MODELS.items():
            model = SecretModel(name, kind, layers, [secret(v) for v in weights])
            for output, threshold in CASES:
                if threshold is not None and name == "mlp3":
                    continue
                for mode in ("all", "off"):
                    with s.scope() as c:
                        y = model.forward(xs, output=output, threshold=threshold, fss=mode)
                    rounds[name, output, threshold, mode] = c.as_dict()["rounds"]
                    out[name, output, threshold, mode] = y.reveal()
        return out, rounds

    res = covault.run(prog, 2, "2pc")
    out, rounds = res["p0"]
    assert len(out) == 26
    for (name, output, threshold, mode), got in out.items():
        want = plain_answer(name, output, threshold, x)
        case = f"{name} {output} {threshold} fss={mode} rows={rows}"
        if output == "decision":
            assert got.shape == (rows,) and got.dtype.kind == "i", case
            np.testing.assert_array_equal(got, want, err_msg=case)
        else:
            np.testing.assert_allclose(got, want.reshape(got.shape), atol=1e-3, err_msg=case)
        if mode == "all" and not (name == "lr" and output == "logits"):  # a linear layer only
            assert rounds[name, output, threshold, "all"] < rounds[name, output, threshold, "off"], case


def test_auto_takes_the_fss_decision_for_one_row_of_a_linear_model():
    """fss='auto': the FSS gate (the rounds of fss='all') for one row's decision on a logistic
    regression's score; the generic comparison (the rounds of fss='off') for 4 rows and for the
    MLP's decision. Every answer against plaintext."""

    def prog(s):
        owner = s.compute_parties[0]

        def secret(v):
            return s.input(v if s.party == owner else None, owner=owner)

        out, rounds = {}, {}
        for rows in (1, 4):
            xs = secret(X[:rows])
            for name in ("lr", "mlp2"):
                kind, layers, weights = MODELS[name]
                model = SecretModel(name, kind, layers, [secret(v) for v in weights])
                for mode in ("auto", "all", "off"):
                    with s.scope() as c:
                        y = model.forward(xs, output="decision", fss=mode)
                    rounds[name, rows, mode] = c.as_dict()["rounds"]
                    out[name, rows, mode] = y.reveal()
        return out, rounds

    out, rounds = covault.run(prog, 2, "2pc")["p0"]
    for (name, rows, mode), got in out.items():
        np.testing.assert_array_equal(
            got, plain_answer(name, "decision", None, X[:rows]), err_msg=f"{name} {rows} {mode}"
        )
    assert rounds["lr", 1, "auto"] == rounds["lr", 1, "all"] < rounds["lr", 1, "off"]
    for case in (("lr", 4), ("mlp2", 1), ("mlp2", 4)):
        assert rounds[(*case, "auto")] == rounds[(*case, "off")] > rounds[(*case, "all")], case


def test_bad_outputs_are_refused():
    def prog(s):
        owner = s.compute_parties[0]
        ws = [s.input(v if s.party == owner else None, owner=owner) for v in MODELS["mlp3"][2]]
        lin = [s.input(v if s.party == owner else None, owner=owner) for v in (W, B)]
        x = s.input(X if s.party == owner else None, owner=owner)
        mlp = SecretModel("m", "mlp", MODELS["mlp3"][1], ws)
        reg = SecretModel("r", "linear_regression", [{"op": "linear", "in": 5, "out": 1}], lin)
        errors = []
        for model, kw in [
            (mlp, {"output": "proba"}),
            (mlp, {"output": "decision", "threshold": 0.4}),
            (reg, {"output": "decision"}),
            (
                SecretModel("l", "logistic_regression", MODELS["lr"][1], lin),
                {"output": "decision", "threshold": 1.5},
            ),
            (mlp, {"output": "scores", "threshold": 0.4}),
        ]:
            with pytest.raises(ModelStoreError) as e:
                model.forward(x, **kw)
            errors.append(str(e.value))
        return errors

    res = covault.run(prog, 2, "2pc")
    errors = res[next(iter(res))]
    assert "output must be one of" in errors[0]
    assert "3 classes" in errors[1] and "argmax" in errors[1]
    assert "needs a classifier" in errors[2]
    assert "threshold must be a probability" in errors[3]
    assert "output='decision' only" in errors[4]
