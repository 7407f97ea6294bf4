"""Leakage: shares of a fixed secret look uniform, and no party ever receives another party's
encoded input values."""

from __future__ import annotations

import numpy as np
import pytest

import covault
from covault.encoding import FixedPoint
from tests.helpers import bit_balance_z

N = 4000


def byte_chi2(words: np.ndarray) -> float:
    """Largest chi-square statistic (255 dof) of any of the 8 byte positions against uniform."""
    raw = words.reshape(-1).view(np.uint8).reshape(-1, 8)
    worst = 0.0
    for pos in range(8):
        counts = np.bincount(raw[:, pos], minlength=256)
        expected = counts.sum() / 256
        worst = max(worst, float(((counts - expected) ** 2 / expected).sum()))
    return worst


def test_uniformity_checks_reject_biased_shares():
    """The statistics below have power: a sloppy "share" (secret plus small noise) fails them."""
    secret = FixedPoint().encode(np.full(N, 3.25))
    noise = np.frombuffer(np.random.default_rng(0).bytes(8 * N), dtype=np.int64) >> 40
    sloppy = secret + noise
    assert byte_chi2(sloppy) > 400


@pytest.mark.parametrize("proto", [("2pc", 2), ("rep3", 3)], ids=["2pc", "rep3"])
def test_shares_of_a_fixed_secret_are_uniform(proto):
    name, n = proto
    secret = np.full(N, 3.25)

    def prog(s):
        owner = s.compute_parties[0]
        x = s.input(secret if s.party == owner else None, owner=owner)
        y = x * x  # shares after a product and a truncation, too
        return x.shares.copy(), y.shares.copy()

    res = covault.run(prog, n, name)
    for party, (xs, ys) in res.items():
        if party == "dealer":
            assert xs.size == 0  # the dealer holds nothing
            continue
        for comp in list(xs) + list(ys):
            # 5.5 sigma over 64 positions; 255-dof chi2 at p ~ 1e-7 is ~385
            assert bit_balance_z(comp) < 5.5, party
            assert byte_chi2(comp) < 385, party


@pytest.mark.parametrize("proto", [("2pc", 2), ("rep3", 3)], ids=["2pc", "rep3"])
def test_no_encoded_input_on_the_wire(proto):
    name, n = proto
    rng = np.random.default_rng(7)  # test data
    data = {p: rng.uniform(-50, 50, size=(6, 6)) for p in ("p0", "p1", "p2")}
    fxp = FixedPoint()
    received: dict[str, list[bytes]] = {}

    def prog(s):
        log = received.setdefault(s.party, [])
        s.net.add_recorder(
            lambda d, peer, msg: log.extend(a.tobytes() for a in msg) if d == "received" else None
        )
        xs = [s.input(data[o] if s.party == o else None, owner=o) for o in s.compute_parties]
        acc = xs[0] @ xs[1] + xs[1] * xs[0]
        for x in xs[2:]:
            acc = acc * x - x
        return (acc.sum() * 0.001).reveal()

    covault.run(prog, n, name)
    for owner in list(data)[:n]:
        needles = [v.tobytes() for v in fxp.encode(data[owner]).reshape(-1)]
        for party, blobs in received.items():
            if party == owner:
                continue
            stream = b"".join(blobs)
            hits = [nd for nd in needles if nd in stream]
            assert not hits, f"{party} received an encoded input value of {owner}"


def test_wire_check_detects_plain_input():
    """Negative control: a program that sends its raw encoded input is caught by the same scan."""
    fxp = FixedPoint()
    value = np.array([1.2345, -7.5])
    got = []

    def prog(s):
        s.net.add_recorder(
            lambda d, peer, msg: got.extend(a.tobytes() for a in msg) if d == "received" else None
        )
        if s.party == "p0":
            s.net.exchange({"p1": [fxp.encode(value)]})
        elif s.party == "p1":
            s.net.exchange(recv_from=["p0"])

    covault.run(prog, 3, "rep3")
    stream = b"".join(got)
    assert any(v.tobytes() in stream for v in fxp.encode(value))


def test_prg_streams_are_independent_per_seed():
    from covault.randomness.prg import PRG, new_seed

    a, b = new_seed(), new_seed()
    assert a != b
    x, y = PRG(a).ring(1000), PRG(b).ring(1000)
    assert not np.array_equal(x, y)
    np.testing.assert_array_equal(PRG(a).ring(1000), x)
    assert bit_balance_z(x) < 6


# -- bit injection: the opened c = b ^ r is uniform, whatever the bits ------------------------------
def ones_fraction(packed: np.ndarray, n: int) -> float:
    return float(np.unpackbits(packed, count=n).mean())


def test_ones_fraction_rejects_raw_bits():
    """Negative control: the bits themselves (all ones here) fail the uniformity bound below."""
    raw = np.packbits(np.ones(N, dtype=np.uint8))
    assert abs(ones_fraction(raw, N) - 0.5) > 0.05


def prog_inject_wire(s):
    sent: list[np.ndarray] = []
    proto = s.protocol
    ones = s.input(
        np.ones(N, dtype=np.int64) if s.party == s.compute_parties[0] else None,
        s.compute_parties[0],
        integer=True,
    )
    x = s.input(np.full(N, 3.25) if s.party == s.compute_parties[1] else None, s.compute_parties[1])
    bits = ones.to_boolean().shares  # bit 0: all ones
    proto.prepare_b2a(N)
    x * x  # a fused product; in rep3 its rounds do not carry the daBits
    x.relu()  # resharing rounds: they do
    s.net.add_recorder(lambda d, peer, msg: sent.extend(msg) if d == "sent" else None)
    proto.b2a_mul(bits, x.shares)
    return sent


@pytest.mark.parametrize("proto", [("2pc", 2), ("rep3", 3)], ids=["2pc", "rep3"])
def test_bit_injection_opens_only_uniform_bits(proto):
    name, n = proto
    res = covault.run(prog_inject_wire, n, name)
    packed = [res[p][0] for p in res if p != "dealer"]  # each compute party's part of c
    for part in packed:  # no party's message is the raw bits (all ones)
        assert part.dtype == np.uint8 and part.size == N // 8
        assert abs(ones_fraction(part, N) - 0.5) < 0.05
    opened = np.bitwise_xor.reduce(np.stack(packed))  # c = b ^ r, as every compute party sees it
    assert abs(ones_fraction(opened, N) - 0.5) < 0.05  # 6 sigma for N = 4000
    for p in res:
        # 2pc: x - a; rep3: the reshared term of r x; the dealer: P1's corrections (offline)
        masked = res[p] if p == "dealer" else res[p][1:]
        for m in masked:
            assert m.dtype == np.int64 and bit_balance_z(m) < 5.5 and byte_chi2(m) < 385
