"""covault.nn layers, losses, optimizers and fixed-point helpers against numpy, both protocols."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import covault
from covault import nn, optim
from covault.errors import ProtocolError, ShapeError
from covault.nn import functional as F
from covault.randomness.public import public_permutation
from covault.tensor import SecretTensor
from tests.helpers import IDS, VARIANTS, dealt, owner_value, run_both, skip_unless_dealt

RNG = np.random.default_rng(11)  # test data only
X = RNG.normal(size=(12, 5))
G = RNG.normal(size=(12, 3))
G4 = RNG.normal(size=(12, 4))
W = RNG.normal(size=(5, 3)) * 0.5
B = RNG.normal(size=3) * 0.1
LOGITS = RNG.normal(size=(12, 4)) * 2
LOGITS2 = RNG.normal(size=(12, 2)) * 2
ONEHOT = np.eye(4)[RNG.integers(0, 4, 12)]
ONEHOT2 = np.eye(2)[RNG.integers(0, 2, 12)]
Y01 = RNG.integers(0, 2, (12, 1)).astype(float)
Z = np.linspace(-4, 4, 12).reshape(12, 1)
TOL = 2e-4


def sig(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def softmax_np(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def inp(s, v):
    return s.input(owner_value(s, v), owner=s.compute_parties[0])


@pytest.fixture(scope="module", params=VARIANTS, ids=IDS)
def layers(request):
    def prog(s):
        x, g = inp(s, X), inp(s, G)
        out = {}
        for kind, weight in (("secret", inp(s, W)), ("public", W)):
            lin = nn.Linear(5, 3, weight=weight, bias_value=B)
            y = lin(x)
            gx = lin.backward(g, scale=0.25)
            out[kind] = (
                y.reveal(),
                gx.reveal(),
                lin.weight.grad.reveal(),
                lin.bias.grad.reveal(),
                lin.weight.grad_scale,
            )
        relu = nn.ReLU()
        a = relu(x)
        out["relu"] = (a.reveal(), relu.backward(x).reveal())
        for kind in ("exact", "piecewise"):
            m = nn.Sigmoid(kind)
            z = inp(s, Z)
            out[kind] = (m(z).reveal(), m.backward(z).reveal())
        for name, logits in (("softmax4", LOGITS), ("softmax2", LOGITS2)):
            m = nn.Softmax()
            z, gg = inp(s, logits), inp(s, G4[:, : logits.shape[1]])
            out[name] = (m(z).reveal(), m.backward(gg).reveal())
        return list(out.items())

    return dict(run_both(prog, request.param))


def test_linear(layers):
    for kind in ("secret", "public"):
        y, gx, gw, gb, scale = layers[kind]
        np.testing.assert_allclose(y, X @ W + B, atol=TOL)
        np.testing.assert_allclose(gx, G @ W.T, atol=TOL)
        np.testing.assert_allclose(gw, X.T @ G, atol=TOL)
        np.testing.assert_allclose(gb, G.sum(0), atol=TOL)
        assert scale == 0.25


def test_relu(layers):
    a, back = layers["relu"]
    np.testing.assert_allclose(a, np.maximum(X, 0), atol=TOL)
    np.testing.assert_allclose(back, X * (X > 0), atol=TOL)


def test_sigmoids(layers):
    s, back = layers["exact"]
    np.testing.assert_allclose(s, sig(Z), atol=5e-4)
    np.testing.assert_allclose(back, Z * sig(Z) * (1 - sig(Z)), atol=2e-3)
    s, back = layers["piecewise"]
    np.testing.assert_allclose(s, np.clip(0.5 + Z / 4, 0, 1), atol=TOL)
    np.testing.assert_allclose(back, Z * (np.abs(Z) <= 2) / 4, atol=TOL)


def prog_activation_rounds(s):
    z = inp(s, Z)
    with s.scope() as piecewise:
        F.sigmoid_piecewise(z, with_mask=True)
    with s.scope() as relu:
        nn.ReLU()(z)
    return piecewise.as_dict(), relu.rounds


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_activation_rounds(proto):
    """ReLU: the comparison's boolean msb (3 rounds in 2pc with the dealer's one-round
    multi-input ANDs, 8 in rep3), then ONE bit-injection round that converts the bits and
    multiplies (rep3's daBits ride along the msb's rounds). Piecewise sigmoid: the msb (3
    rounds) and the bit injection; rep3 runs both in its dealt view (P1, P2 compute, P0 only
    deals: it receives nothing) and returns to replicated shares in one more round."""
    skip_unless_dealt(proto)
    name, n = proto
    res = covault.run(prog_activation_rounds, n, name)
    for p, (piecewise, relu) in res.items():
        if p == "dealer":
            continue
        assert relu == {"2pc": 4, "rep3": 9}[name]
        if name == "2pc":
            assert piecewise["rounds"] == 4
        elif p == "p0":
            assert piecewise["rounds"] == 0 and piecewise["bytes_received"] == 0
            assert piecewise["bytes_sent"] > 0  # the tuples it deals
        else:
            assert piecewise["rounds"] == 5


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_piecewise_sigmoid_saturates_beyond_the_input_range(proto):
    """Computed logits may exceed what an input can encode (|x| < 2^15): the clamp still holds."""
    big = np.array([20000.0, -20000.0, 32767.0, -32767.5, 1.0, 16383.0])

    def prog(s):
        x = inp(s, big)
        z = x + x  # up to 65534 in magnitude
        s_, mid = F.sigmoid_piecewise(z, with_mask=True)
        return s_.reveal(), mid.reveal()

    got, mid = run_both(prog, proto)
    z = 2 * np.round(big * 2**16) / 2**16
    np.testing.assert_allclose(got, np.clip(0.5 + z / 4, 0, 1), atol=1e-4)
    np.testing.assert_array_equal(mid, (np.abs(z) <= 2).astype(np.int64))


def test_softmax(layers):
    for name, logits in (("softmax4", LOGITS), ("softmax2", LOGITS2)):
        s, back = layers[name]
        p = softmax_np(logits)
        g = G4[:, : logits.shape[1]]
        np.testing.assert_allclose(s, p, atol=5e-4)
        np.testing.assert_allclose(back, p * (g - (g * p).sum(1, keepdims=True)), atol=2e-3)


@pytest.fixture(scope="module", params=VARIANTS, ids=IDS)
def losses(request):
    def prog(s):
        out = {}
        for kind in ("exact", "piecewise"):
            loss = nn.BCEWithLogitsLoss(sigmoid=kind)
            z, y = inp(s, Z), inp(s, Y01)
            out[kind] = (loss.backward(z, y).reveal(), loss.scale, loss(z, y).reveal())
        ce = nn.SoftmaxCrossEntropyLoss(reduction="sum")
        z, t = inp(s, LOGITS), inp(s, ONEHOT)
        out["ce"] = (ce.backward(z, t).reveal(), ce.scale, ce(z, t).reveal())
        z, t = inp(s, LOGITS2), inp(s, ONEHOT2)
        out["ce2"] = (ce.backward(z, t).reveal(), ce.scale, ce(z, t).reveal())
        mse = nn.MSELoss()
        p, y = inp(s, G), inp(s, X[:, :3])
        out["mse"] = (mse.backward(p, y).reveal(), mse.scale, mse(p, y).reveal())
        return list(out.items())

    return dict(run_both(prog, request.param))


def test_losses(losses):
    bce = np.mean(np.logaddexp(0, Z) - Y01 * Z)
    g, scale, value = losses["exact"]
    np.testing.assert_allclose(g, sig(Z) - Y01, atol=5e-4)
    assert scale == 1 / 12 and abs(value - bce) < 2e-3
    g, _, _ = losses["piecewise"]
    np.testing.assert_allclose(g, np.clip(0.5 + Z / 4, 0, 1) - Y01, atol=TOL)
    for name, logits, onehot in (("ce", LOGITS, ONEHOT), ("ce2", LOGITS2, ONEHOT2)):
        g, scale, value = losses[name]
        np.testing.assert_allclose(g, softmax_np(logits) - onehot, atol=5e-4)
        lse = np.log(np.exp(logits).sum(1))
        assert scale == 1.0 and abs(value - np.sum(lse - (logits * onehot).sum(1))) < 1e-2
    g, scale, value = losses["mse"]
    np.testing.assert_allclose(g, 2 * (G - X[:, :3]), atol=TOL)
    assert scale == 1 / 12 and abs(value - np.sum((G - X[:, :3]) ** 2) / 12) < 1e-3


def _sequential_np(x, w1, b1, w2, b2, onehot):
    h = x @ w1 + b1
    a = np.maximum(h, 0)
    z = a @ w2 + b2
    g = softmax_np(z) - onehot
    gw2, gb2 = a.T @ g, g.sum(0)
    gh = (g @ w2.T) * (h > 0)
    return gw2, gb2, x.T @ gh, gh.sum(0)


W1, B1 = RNG.normal(size=(5, 6)) * 0.5, RNG.normal(size=6) * 0.1
W2, B2 = RNG.normal(size=(6, 4)) * 0.5, RNG.normal(size=4) * 0.1


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_sequential_backward(proto):
    def prog(s):
        model = nn.Sequential(
            nn.Linear(5, 6, weight=W1, bias_value=B1), nn.ReLU(), nn.Linear(6, 4, weight=W2, bias_value=B2)
        )
        loss = nn.SoftmaxCrossEntropyLoss()
        x, t = inp(s, X), inp(s, ONEHOT)
        got = model.backward(loss.backward(model(x), t), scale=loss.scale, input_grad=False)
        assert got is None
        ps = model.parameters()
        assert [p.name for p in ps] == ["weight", "bias", "weight", "bias"]
        assert all(p.grad_scale == 1 / 12 for p in ps)
        return [ps[i].grad.reveal() for i in (2, 3, 0, 1)]

    got = run_both(prog, proto)
    for a, b in zip(got, _sequential_np(X, W1, B1, W2, B2, ONEHOT)):
        np.testing.assert_allclose(a, b, atol=3e-3)


def _plain_steps(opt, steps):
    """Float64 updates of the covault.optim formulas for w = W, b = B with grads (G-based)."""
    w, b = W.copy(), B.copy()
    uw, ub, mw, mb, vw, vb = (np.zeros_like(a) for a in (w, b, w, b, w, b))
    for t in range(1, steps + 1):
        gw, gb = X.T @ G * t, G.sum(0) * t
        if opt == "sgd":
            uw = 0.9 * uw + 0.1 * (gw / 12 + 0.01 * w)
            ub = 0.9 * ub + 0.1 * (gb / 12)
            w, b = w - uw, b - ub
        else:
            b1, b2 = 0.9, 0.999
            c1, c2 = (1 - b1) / (1 - b1**t), (1 - b2) / (1 - b2**t)
            a1, a2 = b1 * (1 - b1 ** (t - 1)) / (1 - b1**t), b2 * (1 - b2 ** (t - 1)) / (1 - b2**t)
            for g, m, v, p in ((gw / 12 + 0.01 * w, mw, vw, w), (gb / 12, mb, vb, b)):
                m *= a1
                m += c1 * g
                v *= a2
                v += c2 * g * g
                p -= 0.01 * m / np.sqrt(v + 1e-6)
    return w, b


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_optimizers(proto, opt):
    def prog(s):
        lin = nn.Linear(5, 3, weight=W, bias_value=B)
        if opt == "sgd":
            o = optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        else:
            o = optim.Adam(lin.parameters(), lr=0.01, weight_decay=0.01, eps=1e-3)
        x, g = inp(s, X), inp(s, G)
        costs = []
        for t in range(1, 4):
            lin(x)
            gt = g * t
            with s.scope() as c:
                lin.backward(gt, scale=1 / 12, input_grad=False)
                o.step()
            o.zero_grad()
            costs.append(c.rounds)
        # the weight gradient's product and ONE truncation for every parameter together: 2 rounds
        # in 2pc (product, truncation); 2 in rep3 (the product feeds the fused truncation)
        one_trunc = max(costs) <= 2
        return lin.weight.value.reveal(), lin.bias.value.reveal(), one_trunc

    w, b, one_trunc = run_both(prog, proto)
    rw, rb = _plain_steps(opt, 3)
    np.testing.assert_allclose(w, rw, atol=2e-4)
    np.testing.assert_allclose(b, rb, atol=2e-4)
    assert one_trunc or opt == "adam" or not dealt(proto)  # OT rounds come on top


def test_optimizer_errors():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError):
        optim.SGD([p], lr=0)
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError):
        optim.Adam([p], eps=1e-8)
    with pytest.raises(ValueError):
        optim.SGD([p], momentum=1.0)


def test_module_errors():
    with pytest.raises(ShapeError):
        nn.Linear(3, 2, weight=np.zeros((2, 3)))
    with pytest.raises(ShapeError):
        nn.Linear(0, 2)
    with pytest.raises(ValueError):
        nn.Sigmoid("fast")
    with pytest.raises(ValueError):
        nn.MSELoss(reduction="max")
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), "layer")
    with pytest.raises(ProtocolError):
        nn.Linear(2, 1).backward(None)

    def prog(s):
        x = inp(s, X)
        with pytest.raises(ShapeError):
            nn.Linear(4, 2)(x)
        with pytest.raises(ShapeError):
            nn.MSELoss().backward(x, x[:, :2])
        return True

    run_both(prog, ("2pc", 2))


def test_public_initialisation_is_reproducible():
    a = nn.glorot_uniform(30, 64, seed=3)
    assert np.array_equal(a, nn.glorot_uniform(30, 64, seed=3))
    assert not np.array_equal(a, nn.glorot_uniform(30, 64, seed=4))
    bound = np.sqrt(6 / 94)
    assert a.shape == (30, 64) and np.abs(a).max() < bound and np.abs(a).max() > 0.9 * bound
    p = public_permutation(1, "x", 50)
    assert sorted(p) == list(range(50)) and np.array_equal(p, public_permutation(1, "x", 50))


def test_train_eval_and_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(model.parameters()) == 4 and len(model) == 3
    assert model[0].bias.decay is False and model[0].weight.decay is True
    model.eval()
    assert not any(m.training for m in model.modules)
    model.train()
    assert all(m.training for m in model.modules)


# -- fixed-point helpers -------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(
    st.lists(st.floats(-4, 4, allow_nan=False), min_size=3, max_size=3),
    st.floats(1e-4, 3.0),
    st.floats(-2.0, 2.0),
)
@example(vals=[1.9767174118987478, -3.84146916827585, 1.9767174118987478], c1=2.766880868454474e-4, c2=0.0562)
def test_combine(vals, c1, c2):
    a = np.array(vals)

    def prog(s):
        x = inp(s, a)
        raw = F.raw_mul(x, x)  # 32 fractional bits
        out = F.combine([([(c1, raw), (c2, x)], 16, 64.0), ([(c1, x)], 24, 16.0)])
        return out[0].reveal(), out[1].reveal(), out[1].frac

    u, v, frac = run_both(prog, ("2pc", 2))
    enc = np.round(a * 2**16) / 2**16
    assert frac == 24
    # The documented contract: every coefficient gets 20 significant bits unless the bounds
    # leave fewer (a shared shift of at most cap = min(61 - log2(bound) - frac) bits), then one
    # probabilistic truncation (< 2 units in the last place).
    cap = min(61 - 6 - 16, 61 - 4 - 24)

    def coef_err(c, out_frac, t_frac):
        return 0.5 * max(abs(c) * 2.0**-19, 2.0 ** -(out_frac + cap - t_frac))

    big = float(np.abs(enc).max())
    err_u = coef_err(c1, 16, 32) * big**2 + coef_err(c2, 16, 16) * big + 2 * 2.0**-16
    err_v = coef_err(c1, 24, 16) * big + 2 * 2.0**-24
    np.testing.assert_allclose(u, c1 * enc**2 + c2 * enc, rtol=0, atol=err_u)
    np.testing.assert_allclose(v, c1 * enc, rtol=0, atol=err_v)


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_inv_sqrt_wide(proto):
    v = 2.0 ** np.linspace(-23.5, 25.5, 200)

    def prog(s):  # a trivially shared public value with 36 fractional bits
        raw = np.round(v * 2.0**36).astype(np.int64)
        t = SecretTensor(s, s.protocol.add_public(s.protocol.empty(v.shape), raw), 36)
        return F.inv_sqrt_wide(t, 30).reveal()

    got = run_both(prog, proto)
    rel = np.abs(got * np.sqrt(v) - 1)
    assert rel.max() < 1e-4, rel.max()
