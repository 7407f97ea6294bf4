"""rep3's dealt two-party view: P1 and P2 compute as in 2pc with tuples P0 deals; P0 receives nothing."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault.ops import compare
from tests.helpers import owner_value

RNG = np.random.default_rng(77)  # test data only
X = np.round(RNG.normal(size=(5, 7)) * 30, 4)
Y = np.round(RNG.normal(size=(5, 7)) * 3, 4)


def prog(s):
    proto = s.protocol
    p0 = s.compute_parties[0]
    x = s.input(owner_value(s, X, p0), owner=p0)
    y = s.input(owner_value(s, Y, s.compute_parties[2]), owner=s.compute_parties[2])
    view = proto.dealt_view()
    with s.scope() as cost:
        u, v = proto.to_view(x.shares), proto.to_view(y.shares)
        prod = view.mul(u, v)  # raw product: 2f fractional bits
        neg = compare.msb_bits(view, u)  # boolean [x < 0], XOR-shared between P1 and P2
        bit = view.b2a(neg)
        back = proto.from_view(np.stack([prod, bit, u], axis=1))
    same = x._new(np.ascontiguousarray(back[:, 2]), x.frac)
    out = (
        x._new(np.ascontiguousarray(back[:, 0]), 2 * x.frac).reveal(),
        x._new(np.ascontiguousarray(back[:, 1]), 0).reveal(),
        same.reveal(),
    )
    fresh = not np.array_equal(same.shares, x.shares)  # re-randomised on the way back
    return out, cost.as_dict(), fresh


@pytest.mark.parametrize("transport", ["local", "tcp"])
def test_dealt_view_computes_and_returns_to_replicated_shares(transport):
    res = covault.run(prog, 3, "rep3", transport=transport)
    enc_x, enc_y = np.round(X * 2**16) / 2**16, np.round(Y * 2**16) / 2**16
    for p, ((prod, neg, same), cost, fresh) in res.items():
        np.testing.assert_allclose(prod, enc_x * enc_y, atol=2e-9 * np.abs(enc_x * enc_y).max() + 2**-30)
        np.testing.assert_array_equal(neg, (enc_x < 0).astype(np.int64))
        np.testing.assert_array_equal(same, enc_x)
        assert fresh
        if p == "p0":  # the dealer of the view: sends tuples, receives nothing, no round
            assert cost["bytes_received"] == 0 and cost["rounds"] == 0 and cost["bytes_sent"] > 0
        else:  # product 1, msb 3 (the radix-4 carry tree), b2a 1, back 1
            assert cost["rounds"] == 6


def test_view_shares_are_uniform_to_the_other_party():
    """P1's view share x1 + x2 and P2's x0 each look uniform: over many sharings of the same
    secret the top byte of each spreads over all 256 values."""

    def views(s):
        p0 = s.compute_parties[0]
        out = []
        for _ in range(40):
            x = s.input(owner_value(s, np.full(64, 5.0), p0), owner=p0)
            out.append(s.protocol.to_view(x.shares))
        return np.concatenate(out, axis=-1) if out[0].size else None

    res = covault.run(views, 3, "rep3")
    assert res["p0"] is None
    for p in ("p1", "p2"):
        top = (res[p].view(np.uint64) >> np.uint64(56)).astype(np.int64).ravel()
        counts = np.bincount(top, minlength=256)
        assert len(top) == 2560 and (counts > 0).sum() > 230  # uniform: ~256 distinct top bytes
