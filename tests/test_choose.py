"""Per-operation choice of the comparison protocol: every method against plaintext under both
2pc providers, the cost model's choices, and the errors of an unavailable method."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import covault
from covault.errors import CovaultError
from covault.ops.choose import LinkModel, candidates, choose_positive, estimate, positive

VALS = np.concatenate([[0.0, 2**-16, -(2**-16), 1.0, -1.0, 999.0, -999.0], np.linspace(-500, 500, 93)])


def secret_vals(session):
    owner = session.compute_parties[0]
    return session.input(VALS if session.party == owner else None, owner, bound=1000.0)


def program(session, methods, rtt=0.0):
    x = secret_vals(session)
    out = {m: positive(x, method=m).reveal() for m in methods}
    out["auto"] = positive(x, link=LinkModel(rtt=rtt)).reveal()
    out["chosen"] = choose_positive(x, LinkModel(rtt=rtt))
    out["candidates"] = candidates(x)
    return out


@pytest.mark.parametrize("provider,methods", [("dealer", ("ss", "gc", "fss")), ("ot", ("ss", "gc"))])
def test_every_method_equals_plaintext(provider, methods):
    res = covault.run(
        functools.partial(program, methods=methods, rtt=0.05), parties=2, protocol="2pc", provider=provider
    )
    want = (np.round(VALS * 2**16) > 0) * 1.0
    for party in ("p0", "p1"):
        for m in (*methods, "auto"):
            np.testing.assert_array_equal(res[party][m], want, err_msg=f"{provider} {m} at {party}")
        assert res[party]["candidates"] == methods
    # 100 elements at 50 ms RTT: two one-way delays beat seven (dealer) or fourteen (ot)
    assert res["p0"]["chosen"] == res["p1"]["chosen"] != "ss"


def test_rep3_has_secret_sharing_only():
    def prog(session):
        x = secret_vals(session)
        got = positive(x, link=LinkModel(rtt=0.05)).reveal()
        try:
            positive(x, method="gc")
        except CovaultError as exc:
            return got, str(exc)
        return got, None

    res = covault.run(prog, parties=3, protocol="rep3")
    got, err = res["p0"]
    np.testing.assert_array_equal(got, (np.round(VALS * 2**16) > 0) * 1.0)
    assert "comparison method 'gc'" in err and "rep3" in err


def test_fss_is_refused_without_a_dealer():
    def prog(session):
        x = secret_vals(session)
        with pytest.raises(CovaultError, match=r"comparison method 'fss'.*provider 'ot'"):
            positive(x, method="fss")
        return True

    assert covault.run(prog, parties=2, protocol="2pc", provider="ot")["p0"]


def test_the_cost_model_follows_rounds_bytes_and_cpu():
    fast, slow = LinkModel(rtt=0.0, bandwidth=1e9), LinkModel(rtt=0.05, bandwidth=1e9)
    # a fast link: the fewest bytes and CPU win, whatever the size
    assert estimate("ss", 10**6, fast) < estimate("gc", 10**6, fast)
    assert estimate("ss", 10, fast) < estimate("gc", 10, fast)
    # a slow link: few elements go by garbled circuit, many by secret sharing (dealer)
    assert estimate("gc", 100, slow) < estimate("ss", 100, slow)
    assert estimate("ss", 10**6, slow) < estimate("gc", 10**6, slow)
    # without a dealer the garbled circuit wins at every size on a slow link
    for n in (10, 10**4, 10**6):
        assert estimate("gc", n, slow, provider="ot") < estimate("ss", n, slow, provider="ot")
    # a fresh YaoParty pays its base OTs
    assert estimate("gc", 1, fast, setup=True) > estimate("gc", 1, fast) + 0.1
    # wider words cost more garbled bytes
    assert estimate("gc", 10**4, fast, width=64) > estimate("gc", 10**4, fast, width=32)
    with pytest.raises(ValueError, match="method must be one of"):
        estimate("yao", 1, fast)
    with pytest.raises(ValueError, match="bandwidth > 0"):
        LinkModel(rtt=0.01, bandwidth=0)


def test_the_secret_sharing_estimate_takes_the_radix_4_tree_up_to_its_batch_limit():
    """With the dealer, ``ss`` costs 4 one-way delays up to FUSED_ELEMENTS elements, 7 beyond;
    the dealer-free provider 14 at every size."""
    from covault.ops.compare import FUSED_ELEMENTS

    link = LinkModel(rtt=0.01)
    n = FUSED_ELEMENTS
    step = estimate("ss", n + 1, link) - estimate("ss", n, link)
    assert abs(step - 3 * link.rtt / 2) < 1e-3
    ot_step = estimate("ss", n + 1, link, provider="ot") - estimate("ss", n, link, provider="ot")
    assert abs(ot_step) < 1e-3


def test_a_reused_garbling_link_is_a_public_choice_at_every_party():
    """Reusing a YaoParty (held by the compute parties, not the dealer) changes the choice only
    through the public ``gc_ready``: every party, the dealer included, picks the same method."""
    from covault.protocols.gc.convert import gc_party

    slow_fss = {"fss": 1e-3}  # a machine where FSS keys are slow: gc or ss

    def prog(session):
        x = secret_vals(session)
        link = LinkModel(rtt=0.004)  # 100 values: gc wins without its base OTs, loses with them
        yao = gc_party(session)  # None at the dealer
        ready = choose_positive(x, link, gc_ready=True, cpu=slow_fss)
        got = positive(x, method=ready, yao=yao).reveal()
        return ready, choose_positive(x, link, cpu=slow_fss), got

    res = covault.run(prog, parties=2, protocol="2pc", provider="dealer")
    assert {r[0] for r in res.values()} == {"gc"} and {r[1] for r in res.values()} == {"ss"}
    for party in ("p0", "p1"):
        np.testing.assert_array_equal(res[party][2], (np.round(VALS * 2**16) > 0) * 1.0)
