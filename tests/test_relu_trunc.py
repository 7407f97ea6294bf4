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
