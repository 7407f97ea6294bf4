"""Function secret sharing: the DCF against plaintext, and the one-round 2pc gates (drelu, relu,
positive) against plaintext, with their rounds, bytes, leakage and errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

import covault
from covault.errors import BoundError, ProtocolError
from covault.ops import fss as gates
from covault.randomness import fss
from covault.randomness.prg import PRG
from covault.transport.transcript import read_transcript
from tests.helpers import bit_balance_z, owner_value


def _prg() -> PRG:
    return PRG(os.urandom(16))


def _keys(g: PRG, alpha: np.ndarray, m: int, bits: int):
    n = alpha.shape[0]
    beta = g.ring((n, m))
    k0, k1 = fss.keygen(alpha, beta, bits, g.words((n, 2), np.uint64), g.words((n, 2), np.uint64))
    return beta, k0, k1


def _both(k0, k1, x):
    return fss.evaluate(0, k0, x) + fss.evaluate(1, k1, x)


@pytest.mark.parametrize("bits", [1, 6, 8])
@pytest.mark.parametrize("m", [1, 3])
def test_dcf_on_every_input_of_a_small_domain(bits, m):
    g = _prg()
    top = (1 << bits) - 1
    alpha = np.concatenate([[0, top, 1], g.words(5, np.uint64) >> np.uint64(64 - bits)]).astype(np.uint64)
    beta, k0, k1 = _keys(g, alpha, m, bits)
    for x in range(1 << bits):
        xs = np.full(alpha.shape, x, dtype=np.uint64)
        np.testing.assert_array_equal(_both(k0, k1, xs), beta * (xs < alpha)[:, None])


@pytest.mark.parametrize("bits", [32, 48, 63])
def test_dcf_on_random_large_inputs(bits):
    g = _prg()
    n = 2000
    alpha = g.words(n, np.uint64) >> np.uint64(64 - bits)
    x = g.words(n, np.uint64) >> np.uint64(64 - bits)
    x[:3] = alpha[:3]  # x = alpha: not below
    x[3:6] = alpha[3:6] - np.uint64(1)  # just below (or wrapped to the top)
    x[6] = 0
    x[7] = (1 << bits) - 1
    beta, k0, k1 = _keys(g, alpha, 2, bits)
    np.testing.assert_array_equal(_both(k0, k1, x), beta * (x < alpha)[:, None])
    # each key alone is not the answer: the shares of 0 differ from 0
    assert np.count_nonzero(fss.evaluate(0, k0, x)) > n


@pytest.mark.parametrize("bits,m", [(31, 1), (47, 3)])
def test_dcf_key_size_as_documented(bits, m):
    g = _prg()
    n = 64
    _, k0, k1 = _keys(g, g.words(n, np.uint64) >> np.uint64(64 - bits), m, bits)
    sent = sum(a.nbytes for a in k0.corrections())
    assert sent == bits * (16 + 8 * m) * n + 8 * m * n + (2 * bits * n + 7) // 8
    assert sent == pytest.approx(fss.key_bytes(bits, m) * n, abs=1)
    # both keys carry the same correction words; only the roots differ
    for a, b in zip(k0.corrections(), k1.corrections()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_dcf_both_evaluation_layouts_agree(monkeypatch, m):
    """Few points (whole blocks) and many points (word arrays): the same shares, points per key."""
    g = _prg()
    bits, n = 20, 40
    alpha = g.words(n, np.uint64) >> np.uint64(64 - bits)
    beta, k0, k1 = _keys(g, alpha, m, bits)
    x = g.words((n, 3), np.uint64) >> np.uint64(64 - bits)
    x[:, 0] = alpha
    few = fss.evaluate(0, k0, x), fss.evaluate(1, k1, x)
    monkeypatch.setattr(fss, "MANY_POINTS", 1)
    many = fss.evaluate(0, k0, x), fss.evaluate(1, k1, x)
    for a, b in zip(few, many):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(few[0] + few[1], beta[:, None, :] * (x < alpha[:, None])[..., None])


def _keygen_with(monkeypatch, few: int, *args):
    monkeypatch.setattr(fss, "FEW_KEYS", few)
    return fss.keygen(*args)


@pytest.mark.parametrize("bits", [1, 2, 7, 20, 31, 47, 63, 64])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_dcf_keygen_on_integers_equals_the_arrays(monkeypatch, bits, m):
    """Few elements (Python integers) and the vectorised path: bit-identical keys from the same
    inputs, and both evaluation paths (integers, arrays) agree with plaintext on them."""
    g = _prg()
    top = np.uint64(64 - bits)
    for n in (1, 2, 3, 4, 6):
        alpha = g.words(n, np.uint64) >> top
        alpha[0] = [0, (1 << bits) - 1][n % 2]  # the ends of the domain
        beta = g.ring((n, m))
        roots = g.words((n, 2), np.uint64), g.words((n, 2), np.uint64)
        few = _keygen_with(monkeypatch, n, alpha, beta, bits, *roots)
        arrays = _keygen_with(monkeypatch, 0, alpha, beta, bits, *roots)
        for a, b in zip(few, arrays):
            for name in ("root", "cw_seed", "cw_v", "cw_t", "cw_out"):
                got, want = getattr(a, name), getattr(b, name)
                assert got.dtype == want.dtype and got.shape == want.shape, (n, name)
                np.testing.assert_array_equal(got, want, err_msg=f"{n} elements, {name}")
        x = g.words((n, 2), np.uint64) >> top
        x[:, 0] = alpha
        x[:, 1] = np.where(alpha > 0, alpha - np.uint64(1), x[:, 1])
        plain = beta[:, None, :] * (x < alpha[:, None])[..., None]
        for points in (2 * n, 0):  # integers, then arrays
            monkeypatch.setattr(fss, "FEW_POINTS", points)
            np.testing.assert_array_equal(_both(*few, x), plain, err_msg=f"{n} elements, FEW_POINTS {points}")
            np.testing.assert_array_equal(
                _both(*few, x[:, 0]), plain[:, 0], err_msg=f"{n} elements, x = alpha"
            )


def test_dcf_keygen_on_integers_on_every_input_of_a_small_domain(monkeypatch):
    g = _prg()
    bits, m = 5, 2
    monkeypatch.setattr(fss, "FEW_KEYS", 4)
    monkeypatch.setattr(fss, "FEW_POINTS", 4)
    for alpha in range(1 << bits):
        a = np.array([alpha], dtype=np.uint64)
        beta, k0, k1 = _keys(g, a, m, bits)
        for x in range(1 << bits):
            xs = np.array([x], dtype=np.uint64)
            np.testing.assert_array_equal(
                _both(k0, k1, xs), beta * (x < alpha), err_msg=f"alpha {alpha}, x {x}"
            )


def test_dcf_on_no_elements():
    g = _prg()
    beta, k0, k1 = _keys(g, np.zeros(0, dtype=np.uint64), 2, 8)
    assert _both(k0, k1, np.zeros(0, dtype=np.uint64)).shape == (0, 2)


def test_keys_from_corrections_check_count_dtypes_and_shapes():
    g = _prg()
    alpha = g.words(6, np.uint64) >> np.uint64(56)
    beta, k0, k1 = _keys(g, alpha, 2, 8)
    cw = k1.corrections()
    key = fss.DcfKey.from_corrections(k1.root, cw, 8, party="p1", sender="dealer")
    x = g.words(6, np.uint64) >> np.uint64(56)
    np.testing.assert_array_equal(_both(k0, key, x), beta * (x < alpha)[:, None])
    bad = [
        (cw[:3], r"3 arrays, expected at least 4"),
        ([cw[0].view(np.int64), *cw[1:]], r"wrong dtypes \{'seed': dtype\('int64'\)\}"),
        ([cw[0], cw[1].astype(np.float64), *cw[2:]], r"wrong dtypes \{'value': dtype\('float64'\)\}"),
        ([*cw[:2], cw[2].astype(np.int64), cw[3]], r"wrong dtypes \{'bits'"),
        ([cw[0], cw[1], cw[2], cw[3].tolist()], r"wrong dtypes \{'output': 'list'\}"),
        ([cw[0][:7], *cw[1:]], r"shapes .*do not fit 8 bits, 6 elements"),
        ([*cw[:2], cw[2][:-1], cw[3]], r"\(11,\) packed control bytes do not fit 8 bits"),
        ([*cw[:3], cw[3][:, :1]], r"shapes .*'output': \(6, 1\).*do not fit"),
    ]
    for message, match in bad:
        with pytest.raises(
            ProtocolError, match=r"dcf at party 'p1': the DCF correction words from 'dealer'.*" + match
        ):
            fss.DcfKey.from_corrections(k1.root, message, 8, party="p1", sender="dealer")


# -- gates -------------------------------------------------------------------------------------
def _top(n: int) -> int:
    """The largest magnitude below ``2^(n-1)`` that a float bound states exactly (``2^(n-1) - 1``
    up to n = 54; ``2^62 - 512`` for n = 63)."""
    return int(np.nextafter(2.0 ** (n - 1), 0))


def _integers(n: int, shape, g: PRG) -> np.ndarray:
    """Integers in ``[-top, top]`` including 0, +-1, the extremes, in ``shape``."""
    size = int(np.prod(shape))
    top = _top(n)
    special = np.array([0, 1, -1, top, -top, top - 1, -top + 1, 2, -2], dtype=np.int64)
    special = special[np.abs(special) <= top]
    rand = (g.ring(size) % np.int64(2 * top + 1)) - np.int64(top)
    vals = np.concatenate([special, rand])[:size]
    return vals.reshape(shape)


def _secret(s, values, n):
    """An integer tensor with the public bound ``_top(n)`` (so the gates' domain is n)."""
    x = s.input(owner_value(s, values), owner=s.compute_parties[0], integer=True, bound=2.0 ** (n - 1))
    return x.with_bound(float(_top(n)))


def _run(prog):
    res = covault.run(prog, 2, "2pc")
    np.testing.assert_equal(res["p0"], res["p1"])
    return res


@pytest.mark.parametrize("n", [2, 9, 32, 48, 63])
@pytest.mark.parametrize("shape", [(20,), (4, 5), (0,), (3, 0)])
def test_gates_match_plaintext_on_integers(n, shape):
    values = _integers(n, shape, _prg())

    def prog(s):
        x = _secret(s, values, n)
        assert gates.domain_bits(x, "test") == n
        d, r, p = gates.drelu(x), gates.relu(x), gates.positive(x)
        assert (d.frac, d.bound, r.frac, r.bound, p.frac, p.bound) == (0, 1.0, 0, x.bound, 0, 1.0)
        assert d.shape == r.shape == p.shape == shape
        return d.reveal(), r.reveal(), p.reveal()

    d, r, p = _run(prog)["p0"]
    np.testing.assert_array_equal(d, (values >= 0).astype(np.int64))
    np.testing.assert_array_equal(r, np.maximum(values, 0))
    np.testing.assert_array_equal(p, (values > 0).astype(np.int64))


def test_gates_match_plaintext_on_fixed_point():
    ulp = 2.0**-16
    values = np.array([0.0, ulp, -ulp, 1.5, -1.5, 3.0, -3.0, 3.0 - ulp, -(3.0 - ulp), 0.2, -0.7])

    def prog(s):
        x = s.input(owner_value(s, values), owner=s.compute_parties[0], bound=3.0 + ulp).with_bound(3.0)
        assert gates.domain_bits(x, "test") == 19  # 3 * 2^16 < 2^18
        return gates.drelu(x).reveal(), gates.relu(x).reveal(), gates.positive(x - 0.2).reveal()

    d, r, p = _run(prog)["p0"]
    np.testing.assert_array_equal(d, (values >= 0).astype(np.int64))
    np.testing.assert_allclose(r, np.maximum(values, 0), atol=ulp)
    np.testing.assert_array_equal(p, (np.round(values * 2**16) > round(0.2 * 2**16)).astype(np.int64))


def test_one_unit_beyond_the_bound_keeps_its_sign():
    """A fixed-point operand one unit beyond its bound (a product's truncation error) where
    ``ceil(bound 2^16) = 2^20 - 1``: the domain takes the unit (22 bits, not 21, where ``2^20``
    would wrap to ``-2^20``), and the gates match plaintext."""
    ulp = 2.0**-16
    bound = (2**20 - 1) * ulp
    values = np.array([bound + ulp, -(bound + ulp), bound, -bound, ulp, -ulp, 0.0])

    def prog(s):
        x = s.input(owner_value(s, values), owner=s.compute_parties[0], bound=17.0).with_bound(bound)
        assert gates.domain_bits(x, "test") == 22
        return gates.drelu(x).reveal(), gates.relu(x).reveal(), gates.positive(x).reveal()

    d, r, p = _run(prog)["p0"]
    np.testing.assert_array_equal(d, (values >= 0).astype(np.int64))
    np.testing.assert_allclose(r, np.maximum(values, 0), atol=ulp)
    np.testing.assert_array_equal(p, (values > 0).astype(np.int64))


def test_identities_of_the_relu_gate():
    """The module's identities 1-4 on every (x, r) of a 5-bit domain, in plaintext."""
    n = 5
    half, full = 1 << (n - 1), 1 << n
    for x in range(-half + 1, half):
        u = x % full
        for R in range(full):
            X = (u + R) % full
            p, m = X >> (n - 1), R >> (n - 1)
            c = int(X % half < R % half)
            msb = int(x < 0)
            assert msb == p ^ m ^ c and (m ^ c) == m + (1 - 2 * m) * c
            w = int(X < R)
            assert w == ((m | c) if p == 0 else (m & c))
            assert u == X - R + full * w
            b = 1 - msb
            assert b * w == (1 - p) * m * c and b * x == b * u
            q = m + (1 - 2 * m) * c
            s = 1 - 2 * p
            relu = (1 - p) * (X - R) - s * q * X + s * (m * R + (1 - 2 * m) * c * R) + (1 - p) * full * m * c
            assert relu == max(x, 0)


@pytest.mark.parametrize("bound", [2.0**15, 4.0, 100.0])
def test_sigmoid_within_1e_3_over_the_range(bound):
    ulp = 2.0**-16
    top = bound - ulp
    grid = np.linspace(-min(top, 10.0), min(top, 10.0), 4001)
    knots = gates.sigmoid_pieces()[0]
    values = np.concatenate(
        [grid, knots[np.abs(knots) < top], [0.0, ulp, -ulp, top, -top, top / 2, -top / 2]]
    )

    def prog(s):
        x = s.input(owner_value(s, values), owner=s.compute_parties[0], bound=bound)
        with s.scope() as c:
            y = gates.sigmoid(x)
        assert y.frac == 16 and y.bound <= 1.0 + 2.0**-14
        return y.reveal(), c.as_dict()["rounds"]

    res = _run(prog)
    y, rounds = res["p0"]
    assert rounds == 2
    err = np.abs(y - 0.5 * (1 + np.tanh(values / 2)))
    assert err.max() <= 1e-3


@pytest.mark.parametrize("shape", [(3, 4), (0,), (2, 0)])
def test_sigmoid_shapes(shape):
    values = np.linspace(-8, 8, int(np.prod(shape))).reshape(shape)

    def prog(s):
        y = gates.sigmoid(s.input(owner_value(s, values), owner=s.compute_parties[0], bound=16.0))
        assert y.shape == shape
        return y.reveal()

    y = _run(prog)["p0"]
    np.testing.assert_allclose(y, 0.5 * (1 + np.tanh(values / 2)), atol=1e-3)


def test_the_sigmoid_pieces_are_the_odd_extension():
    knots, a, b = gates.sigmoid_pieces()
    assert len(knots) == 23 and np.all(np.diff(knots) > 0)
    x = np.linspace(-12, 12, 240001)
    j = np.searchsorted(knots, x, side="right") - 1
    approx = np.where(j < 0, 0.0, a[np.maximum(j, 0)] + b[np.maximum(j, 0)] * x)
    assert np.abs(approx - 0.5 * (1 + np.tanh(x / 2))).max() <= 7.51e-4


# -- cost --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [20, 40])
def test_one_round_and_the_documented_bytes(n):
    size = 37
    values = _integers(n, (size,), _prg())
    word = 4 if n <= 32 else 8

    def prog(s):
        x = _secret(s, values, n)
        costs = []
        for gate in (gates.drelu, gates.relu, gates.positive):
            with s.scope() as c:
                gate(x)
            costs.append(c.as_dict())
        return costs

    def prog_sigmoid(s):
        x = _secret(s, values, n)._new(_secret(s, values, n).shares, 8, float(_top(n) - 1) / 256)
        with s.scope() as c:
            gates.sigmoid(x)
        return [c.as_dict()]

    res = covault.run(prog, 2, "2pc")
    sig = covault.run(prog_sigmoid, 2, "2pc")
    for party, costs in res.items():
        cases = [(n - 1, 1, 8, 1, 0), (n - 1, 3, 24, 1, 0), (n - 1, 1, 8, 1, 0), (n, 2, 24, 2, 8)]
        for (bits, w, extra, rounds, more), c in zip(cases, costs + sig[party]):
            key = bits * (16 + 8 * w) * size + 8 * w * size + (2 * bits * size + 7) // 8
            if party == "dealer":
                assert c["rounds"] == 0 and c["bytes_received"] == 0
                assert c["bytes_sent"] == 2 * key + extra * size
            else:
                assert c["rounds"] == rounds and c["bytes_sent"] == (word + more) * size
                got = c["bytes_received"] - (word + more) * size
                assert got == key + (extra * size if party == "p1" else 0)


# -- leakage -----------------------------------------------------------------------------------
def test_the_opened_value_is_uniform():
    """A constant input: the opened ``X = x + r mod 2^n`` is uniform (chi-square on 8 bits, bit
    balance on 32), whatever ``x``."""
    seen: dict[int, list[np.ndarray]] = {8: [], 32: []}

    def prog(s):
        got = []
        s.net.add_recorder(lambda d, peer, msg: got.append(msg[0].copy()) if d == "received" else None)
        out = {}
        for n in (8, 32):
            x = _secret(s, np.full(8192, 5, dtype=np.int64), n)
            got.clear()
            gates.drelu(x)
            out[n] = [a for a in got if a.shape == (8192,)]
        return out

    res = covault.run(prog, 2, "2pc")
    for party in ("p0", "p1"):
        for n in (8, 32):
            seen[n] += res[party][n]
    words8 = np.concatenate(seen[8]).astype(np.int64)
    counts = np.bincount(words8, minlength=256)
    expected = words8.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 8 * np.sqrt(2 * 255)  # 255 degrees of freedom, 8 standard deviations
    words32 = np.concatenate(seen[32]).astype(np.uint64)
    z = bit_balance_z(words32)  # the 32 high bit positions are zero by construction
    low = words32 & np.uint64(0xFFFF_FFFF)
    assert z > 100 and bit_balance_z(low | (low << np.uint64(32))) < 6


def test_the_wire_holds_no_input_and_the_dealer_no_function_of_it(tmp_path):
    """No message any party receives holds a word of the input (as a 64-bit ring element or as
    its n-bit masked width); the dealer sends the same sizes for different inputs."""
    g = _prg()
    n = 32
    runs = [_integers(n, (300,), g), _integers(n, (300,), g)]

    def prog(values):
        def body(s):
            x = _secret(s, values, n)
            gates.relu(x)
            gates.drelu(x)
            return None

        return body

    sizes = []
    for i, values in enumerate(runs):
        folder = tmp_path / str(i)
        covault.run(prog(values), 2, "2pc", transcript_dir=folder)
        secret = set(values.tolist()) | set((values % (1 << n)).tolist())
        secret -= {0, 1, 2, -1, -2}  # small words occur by chance in the packed control bits
        dealer = []
        for path in folder.glob("*.transcript"):
            _, messages = read_transcript(path)
            for msg in messages:
                if path.name.startswith("dealer"):
                    dealer.append([(a.dtype.str, a.shape) for a in msg["arrays"]])
                if path.name.startswith("p0") and msg["to"] == "p1" and len(msg["arrays"]) == 2:
                    continue  # the input's own sharing (its header)
                for a in msg["arrays"]:
                    if a.dtype.kind in "iu" and a.itemsize >= 4 and a.size:
                        assert not secret & set(a.astype(np.int64).ravel().tolist()), path.name
        sizes.append(dealer)
    assert sizes[0] == sizes[1] and len(sizes[0]) == 4


# -- errors ------------------------------------------------------------------------------------
def test_errors_name_the_operation_and_the_bound():
    def prog(s):
        x = s.input(owner_value(s, np.arange(4)), owner=s.compute_parties[0], integer=True)
        wide = x._new(x.shares, 0, 2.0**62)
        with pytest.raises(BoundError, match=r"fss\.relu.*needs 64 bits"):
            gates.relu(wide)
        with pytest.raises(BoundError, match=r"fss\.drelu.*bound is unknown"):
            gates.drelu(x._new(x.shares, 0, None))
        with pytest.raises(BoundError, match=r"fss\.positive.*bound is unknown"):
            gates.positive(x._new(x.shares, 0, None))
        assert gates.domain_bits(x._new(x.shares, 0, float(_top(63))), "relu") == 63
        return True

    assert all(covault.run(prog, 2, "2pc").values())


def test_refused_outside_2pc():
    def prog(s):
        x = s.input(owner_value(s, np.arange(4)), owner=s.compute_parties[0], integer=True)
        assert not gates.available(x)
        with pytest.raises(ProtocolError, match=r"fss\.drelu.*'2pc'.*'rep3'"):
            gates.drelu(x)
        return True

    assert all(covault.run(prog, 3, "rep3").values())


# -- processes ---------------------------------------------------------------------------------
def _prog_tcp(s):
    values = np.array([-3, -1, 0, 1, 2, 1000, -1000], dtype=np.int64)
    x = _secret(s, values, 12)
    with s.scope() as c:
        r = gates.relu(x)
    with s.scope() as c2:
        y = gates.sigmoid(x._new(x.shares, 8, x.bound / 256))
    return r.reveal(), c.as_dict()["rounds"], y.reveal(), c2.as_dict()["rounds"]


def test_gates_over_tcp_with_tls():
    res = covault.run(_prog_tcp, 2, "2pc", transport="tcp", timeout=60)
    values = np.array([-3, -1, 0, 1, 2, 1000, -1000]) / 256
    for p in ("p0", "p1"):
        r, rounds, y, rounds2 = res[p]
        np.testing.assert_array_equal(r, [0, 0, 0, 1, 2, 1000, 0])
        np.testing.assert_allclose(y, 0.5 * (1 + np.tanh(values / 2)), atol=1e-3)
        assert rounds == 1 and rounds2 == 2


# -- a private query with tuples dealt ahead ------------------------------------------------------
def test_gates_in_a_query_with_the_dealers_pool():
    """``covault.serving.online.Query`` with ``pool=True``: the dealer deals a single-row query's
    keys ahead (its batch reaches P0 and P1 alike); the client gets the plaintext answers, and a
    single-row decision costs the affine layers' rounds plus one per gate."""
    from covault.serving.online import Query, affine

    g = _prg()
    w1 = (g.ring((4, 5)) % 2000 - 1000) / 1000
    b1 = (g.ring(5) % 2000 - 1000) / 1000
    w2 = (g.ring((5, 2)) % 2000 - 1000) / 1000
    rows = [(g.ring((1, 4)) % 6000 - 3000) / 1000 for _ in range(3)] + [np.zeros((2, 4))]

    def plain(x):
        z = np.maximum(x @ w1 + b1, 0) @ w2
        return z, 0.5 * (1 + np.tanh(z / 2)), (z[:, 1:] > z[:, :1]).astype(np.int64)

    def prog(s):
        mine = s.party == "owner"
        m = [s.input(v if mine else None, owner="owner", bound=2.0) for v in (w1, b1, w2)]

        def logits(x):
            return gates.relu(affine(x, m[0], m[1])) @ m[2]

        def probabilities(x):
            return gates.sigmoid(logits(x))

        def decision(x):
            z = logits(x)
            return gates.positive(z[:, 1:] - z[:, :1])

        out = []
        for fn in (logits, probabilities, decision):
            with Query(s, "client", 4, fn, bound=4.0, pool=True) as q:
                out.append([q(r if s.party == "client" else None) for r in rows])
        return out

    res = covault.run(prog, 2, "2pc", data_parties=["owner", "client"])
    for k, tol in enumerate((64 * 2.0**-16, 2e-3, 0)):
        for r, got in zip(rows, res["client"][k]):
            np.testing.assert_allclose(got, plain(r)[k], atol=tol)
