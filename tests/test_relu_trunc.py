"""relu of a truncated product with the truncation's opening in the comparison's first round."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault.ops.compare import fuses_trunc, relu_trunc
from covault.protocols.base import Rider
from tests.helpers import ULP

G = np.random.default_rng(11)  # test data only
X = G.uniform(-3, 3, (3, 5))
W = G.uniform(-2, 2, (5, 8))
WANT = np.maximum(X @ W, 0)


def prog(s):
    a = s.compute_parties[0]
    x = s.input(X if s.party == a else None, owner=a, bound=4.0)
    w = s.input(W if s.party == a else None, owner=a, bound=2.0)
    z = covault.SecretTensor(s, s.protocol.matmul(x.shares, w.shares), x.frac + w.frac, 4.0 * 2.0 * 5)
    with s.scope() as fused:
        y = relu_trunc(z, z.frac - s.frac_bits)
    with s.scope() as apart:
        t = z.truncate(z.frac - s.frac_bits)
        y2 = covault.SecretTensor(s, t.shares, s.frac_bits, t.bound).relu()
    return y.frac, y.reveal(), y2.reveal(), fused.as_dict()["rounds"], apart.as_dict()["rounds"]


@pytest.mark.parametrize("transport", ["local", "tcp"])
@pytest.mark.parametrize("protocol,n", [("2pc", 2), ("rep3", 3)])
def test_relu_trunc_matches_plaintext_and_saves_a_round_in_2pc(protocol, n, transport):
    res = covault.run(prog, n, protocol, transport=transport)
    frac, y, y2, fused, apart = res["p0"]
    assert frac == 16
    np.testing.assert_allclose(y, WANT, atol=8 * ULP)
    np.testing.assert_allclose(y2, WANT, atol=8 * ULP)
    if protocol == "2pc":
        assert fused == apart - 1 == 4  # the truncation rides with the first AND round
    else:
        assert fused == apart  # rep3: truncate, then relu


def test_the_fused_route_is_taken_where_it_saves_a_round():
    def check(s):
        return fuses_trunc(s.protocol, 64), fuses_trunc(s.protocol, 4096)

    assert covault.run(check, 2, "2pc")["p0"] == (True, False)
    assert covault.run(check, 3, "rep3")["p0"] == (False, False)
    assert covault.run(check, 2, "2pc", provider="ot")["p0"] == (False, False)


def test_a_rider_without_the_one_round_and_is_refused():
    def prog(s):
        x = np.zeros((s.protocol.ncomp, 3, 2), np.uint64)
        with pytest.raises(covault.ProtocolError, match="rider only in its one round"):
            s.protocol.and_many(x, ((0,),), (), Rider([]))
        return True

    assert all(covault.run(prog, 2, "2pc").values())


def model_prog(layers, weights, rows, output, bound=4.0):
    from covault.serving import SecretModel
    from covault.serving.online import affine

    def prog(s):
        a = s.compute_parties[0]
        ws = [s.input(v if s.party == a else None, owner=a, bound=2.0) for v in weights]
        x = s.input(rows if s.party == a else None, owner=a, bound=bound)
        model = SecretModel("m", "mlp", layers, ws)
        with s.scope() as cost:
            y = model.forward(x, output=output)
        with s.scope() as ref:  # the same layers with the truncation before the relu
            h = affine(x, ws[0], ws[1]).relu()
            affine(h, ws[2], ws[3], exact=output == "decision")
        return y.reveal(), cost.as_dict()["rounds"], ref.as_dict()["rounds"]

    return prog


def test_a_hidden_layers_relu_saves_its_round_in_the_model():
    layers = [{"op": "linear", "in": 5, "out": 8}, {"op": "relu"}, {"op": "linear", "in": 8, "out": 3}]
    weights = [W, G.uniform(-1, 1, 8), G.uniform(-1, 1, (8, 3)), G.uniform(-1, 1, 3)]
    want = np.maximum(X @ W + weights[1], 0) @ weights[2] + weights[3]
    y, rounds, ref = covault.run(model_prog(layers, weights, X, "logits"), 2, "2pc")["p0"]
    np.testing.assert_allclose(y, want, atol=32 * ULP)
    assert rounds == ref - 1
    y, rounds, ref = covault.run(model_prog(layers, weights, X, "logits"), 3, "rep3")["p0"]
    np.testing.assert_allclose(y, want, atol=32 * ULP)
    assert rounds == ref


def test_a_decisions_last_layer_stays_exact_with_a_relu_after_it():
    """linear, relu, sigmoid: the decision compares the exact product (2^-20 > 0), never one
    rounded to 16 fractional bits (0)."""
    layers = [{"op": "linear", "in": 1, "out": 1}, {"op": "relu"}, {"op": "sigmoid"}]
    tiny = 2.0**-10
    rows = np.full((8, 1), tiny)

    def prog(s):
        from covault.serving import SecretModel

        a = s.compute_parties[0]
        ws = [
            s.input(v if s.party == a else None, owner=a, bound=1.0)
            for v in (np.array([[tiny]]), np.zeros(1))
        ]
        x = s.input(rows if s.party == a else None, owner=a, bound=1.0)
        return SecretModel("m", "mlp", layers, ws).forward(x, output="decision").reveal()

    np.testing.assert_array_equal(covault.run(prog, 2, "2pc")["p0"], np.ones(8))


def test_two_classes_after_a_relu_take_the_margin_of_the_relu_outputs():
    """linear, relu, softmax over two classes: softmax(relu(z)), not sigmoid(relu(z1 - z0))."""
    layers = [{"op": "linear", "in": 2, "out": 2}, {"op": "relu"}, {"op": "softmax"}]
    rows = np.array([[-2.0, -1.0], [1.0, 3.0], [2.0, -1.0]])

    def prog(s):
        from covault.serving import SecretModel

        a = s.compute_parties[0]
        ws = [s.input(v if s.party == a else None, owner=a, bound=2.0) for v in (np.eye(2), np.zeros(2))]
        x = s.input(rows if s.party == a else None, owner=a, bound=4.0)
        m = SecretModel("m", "mlp", layers, ws)
        return m.forward(x, output="scores").reveal(), m.forward(x, output="decision").reveal()

    for protocol, n in (("2pc", 2), ("rep3", 3)):
        scores, decision = covault.run(prog, n, protocol)["p0"]
        r = np.maximum(rows, 0)
        e = np.exp(r - r.max(axis=1, keepdims=True))
        np.testing.assert_allclose(scores, e / e.sum(axis=1, keepdims=True), atol=2e-3)
        np.testing.assert_array_equal(decision, [0, 1, 0])  # a tie (0, 0): the first class


def test_bits_outside_the_fraction_and_a_bound_too_large_are_refused():
    def prog(s):
        a = s.compute_parties[0]
        x = s.input(np.ones(3) if s.party == a else None, owner=a, bound=2.0)
        with pytest.raises(ValueError, match=r"bits must be within 0\.\.16"):
            relu_trunc(x, 17)
        with pytest.raises(ValueError, match="bits must be within"):
            relu_trunc(x, -1)
        wide = covault.SecretTensor(s, x.shares, 32, 2.0**31)
        with pytest.raises(covault.BoundError):
            relu_trunc(wide, 16)
        return True

    for protocol, n in (("2pc", 2), ("rep3", 3)):
        assert all(covault.run(prog, n, protocol).values())
