"""provider "ot": 2pc with correlations made by the two compute parties from oblivious transfer
(no dealer party): every correlation against its definition, the operations against plaintext
(in process and over TCP with TLS between two processes), leakage, and what it does not offer."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import covault
from covault import ring
from covault.errors import ProtocolError
from covault.ops import fss
from covault.randomness.providers import needs_dealer
from covault.randomness.providers.ot import OTProvider
from tests.helpers import bit_balance_z
from tests.test_security import byte_chi2, prog_inject_wire

U64 = np.uint64
N = 4000


def run_ot(program, **kw):
    res = covault.run(program, 2, "2pc", provider="ot", **kw)
    assert set(res) == {"p0", "p1"}  # two processes' worth of parties, no dealer
    return res


def own(s, value, owner):
    return value if s.party == owner else None


# -- the correlations against their definitions ------------------------------------------------------
def prog_correlations(s, requests):
    prov = s.protocol.provider
    assert isinstance(prov, OTProvider)
    out = []
    for name, args in requests:
        if name == "beaver":
            sx, sy, op = args
            sz = np.broadcast_shapes(sx, sy) if op == "mul" else ring.matmul_shape(sx, sy)
            out.append(prov.beaver(sx, sy, sz, np.multiply if op == "mul" else ring.matmul))
        else:
            out.append(getattr(prov, name)(*args))
    return out


def combine(res, i, xor=()):
    a, b = res["p0"][i], res["p1"][i]
    return [(u ^ v) if j in xor else (u + v) for j, (u, v) in enumerate(zip(a, b))]


BEAVER = [
    ((5,), (5,), "mul"),
    ((3, 1), (1, 4), "mul"),
    ((4, 3), (3, 2), "matmul"),  # bits of A, rows of B
    ((40, 3), (3, 2), "matmul"),  # bits of B, columns of A
    ((3,), (3, 4), "matmul"),
    ((2, 3, 4), (4, 5), "matmul"),
    ((0, 3), (3, 2), "matmul"),
]


def test_beaver_and_matrix_triples():
    res = run_ot(functools.partial(prog_correlations, requests=[("beaver", r) for r in BEAVER]))
    for i, (sx, sy, op) in enumerate(BEAVER):
        a, b, c = combine(res, i)
        assert a.shape == sx and b.shape == sy
        want = a * b if op == "mul" else ring.matmul(a, b)
        np.testing.assert_array_equal(c, want)


def test_and_triples_truncation_masks_and_dabits():
    reqs = [
        ("and_triple", ((7,), np.uint64)),
        ("and_triple", ((3, 2), np.uint8)),
        ("trunc_mask", ((500,), 16)),
        ("trunc_mask", ((3, 3), 1)),
        ("trunc_mask", ((3,), 62)),
        ("dabit", ((9,),)),
        ("dabit_beaver", ((4, 1), (4, 3))),
        ("dabit_beaver", ((5,), (5,))),
    ]
    res = run_ot(functools.partial(prog_correlations, requests=reqs))
    for i in (0, 1):
        a, b, c = combine(res, i, xor=(0, 1, 2))
        np.testing.assert_array_equal(c, a & b)
        assert a.dtype == reqs[i][1][1]
    for i in (2, 3, 4):
        bits = reqs[i][1][1]
        r, u, v = combine(res, i)
        msb = (r.view(U64) >> U64(63)).view(np.int64)
        np.testing.assert_array_equal(u, msb << np.int64(63 - bits))
        np.testing.assert_array_equal(v, (r & np.int64(0x7FFF_FFFF_FFFF_FFFF)) >> np.int64(bits))
    assert bit_balance_z(combine(res, 2)[0]) < 5.5  # r is uniform
    rb, ra = combine(res, 5, xor=(0,))
    np.testing.assert_array_equal(ra, rb & 1)
    for i in (6, 7):
        rb, ra, a, rab = combine(res, i, xor=(0,))
        np.testing.assert_array_equal(ra, rb & 1)
        np.testing.assert_array_equal(rab, ra * a)


def test_small_chunks_split_the_ot_calls():
    """Calls of at most ``chunk`` words: the same triples, in more OT calls."""

    def prog(s):
        s.protocol.provider.chunk = 64 * 3
        return prog_correlations(
            s, [("beaver", ((10,), (10,), "mul")), ("beaver", ((6, 3), (3, 1), "matmul"))]
        )

    res = run_ot(prog)
    a, b, c = combine(res, 0)
    np.testing.assert_array_equal(c, a * b)
    a, b, c = combine(res, 1)
    np.testing.assert_array_equal(c, ring.matmul(a, b))


# -- the operations against plaintext -----------------------------------------------------------------
def prog_ops(s, arrays):
    x, y, m, w = arrays
    p0, p1 = s.compute_parties
    sx, sy = s.input(own(s, x, p0), p0), s.input(own(s, y, p1), p1)
    sm, sw = s.input(own(s, m, p0), p0), s.input(own(s, w, p1), p1)
    out = {
        "mul": sx * sy,
        "matmul": sm @ sw,
        "gt": sx > sy,
        "pos": sx > 0,
        "sigmoid": sx.sigmoid(),
        "relu": sx.relu(),
        "trunc": sx * 0.37,
        "max": sm.max(axis=1),
    }
    return {k: v.reveal() for k, v in out.items()}


def check_ops(res):
    rng = np.random.default_rng(3)  # test data, as in the program's caller
    x, y, m, w = data(rng)
    got = res["p0"]
    for k in got:
        np.testing.assert_array_equal(got[k], res["p1"][k])
    tol = 4 * 2.0**-16
    np.testing.assert_allclose(got["mul"], x * y, atol=tol * 10)
    np.testing.assert_allclose(got["matmul"], m @ w, atol=tol * 20)
    np.testing.assert_array_equal(got["gt"], (x > y).astype(np.int64))
    np.testing.assert_array_equal(got["pos"], (x > 0).astype(np.int64))
    np.testing.assert_allclose(got["sigmoid"], 1 / (1 + np.exp(-x)), atol=0.02)
    np.testing.assert_allclose(got["relu"], np.maximum(x, 0), atol=tol)
    np.testing.assert_allclose(got["trunc"], x * 0.37, atol=tol * 4)
    np.testing.assert_allclose(got["max"], m.max(axis=1), atol=tol)


def data(rng):
    return (
        rng.uniform(-6, 6, 64),
        rng.uniform(-6, 6, 64),
        rng.uniform(-2, 2, (5, 7)),
        rng.uniform(-2, 2, (7, 3)),
    )


def test_operations_against_plaintext():
    res = run_ot(functools.partial(prog_ops, arrays=data(np.random.default_rng(3))))
    check_ops(res)


def test_logistic_regression_trains_like_the_dealer_path():
    from sklearn.datasets import load_breast_cancer

    from covault.ml import LogisticRegression

    X, yv = load_breast_cancer(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0))[:200]
    yv = yv[:200].astype(float)

    def prog(s):
        p0, p1 = s.compute_parties
        sx, sy = s.input(own(s, X, p0), p0), s.input(own(s, yv, p1), p1)
        model = LogisticRegression(epochs=2, batch_size=50, learning_rate=0.5, shuffle="none").fit(sx, sy)
        return (model.predict(sx).reveal() == yv).mean()

    acc_ot = run_ot(prog)["p0"]
    acc_dealer = covault.run(prog, 2, "2pc")["p0"]
    assert acc_ot > 0.85 and abs(acc_ot - acc_dealer) < 0.05


@pytest.mark.processes
def test_operations_over_tcp_tls_two_processes():
    res = run_ot(functools.partial(prog_ops, arrays=data(np.random.default_rng(3))), transport="tcp")
    check_ops(res)


# -- leakage -------------------------------------------------------------------------------------------
def test_shares_uniform_and_no_input_on_the_wire():
    from covault.encoding import FixedPoint

    secret = np.full(N, 3.25)
    received: dict[str, list[bytes]] = {}

    def prog(s):
        log = received.setdefault(s.party, [])
        s.net.add_recorder(
            lambda d, peer, msg: log.extend(a.tobytes() for a in msg) if d == "received" else None
        )
        x = s.input(own(s, secret, "p0"), "p0")
        y = x * x
        z = (x > 1).shares.copy()
        return x.shares.copy(), y.shares.copy(), z

    res = run_ot(prog)
    for party, (xs, ys, _) in res.items():
        for comp in (xs[0], ys[0]):
            assert bit_balance_z(comp) < 5.5 and byte_chi2(comp) < 385, party
    needle = FixedPoint().encode(np.array([3.25]))[0].tobytes()
    square = FixedPoint().encode(np.array([3.25**2]))[0].tobytes()
    stream = b"".join(received["p1"])
    assert needle not in stream and square not in stream


def test_bit_injection_opens_only_uniform_bits():
    """The opening's message (the last: the OTs of the daBits come first) is ``b ^ r`` packed
    and ``x - a``, uniform."""
    res = run_ot(prog_inject_wire)
    packed = [res[p][-2] for p in res]
    for part in packed:
        assert part.dtype == np.uint8 and part.size == N // 8
        assert abs(float(np.unpackbits(part, count=N).mean()) - 0.5) < 0.05
    opened = np.bitwise_xor.reduce(np.stack(packed))
    assert abs(float(np.unpackbits(opened, count=N).mean()) - 0.5) < 0.05
    for p in res:
        masked = res[p][-1]
        assert masked.dtype == np.int64 and bit_balance_z(masked) < 5.5 and byte_chi2(masked) < 385


# -- registry and what it does not offer ----------------------------------------------------------------
def test_registry_no_dealer_and_clear_limits():
    assert not needs_dealer("2pc", "ot")
    with pytest.raises(ProtocolError, match="takes no dealer"):
        OTProvider("p0", "p0", "p1", "dealer", {}, None, ot=(None, None))

    def prog(s):
        x = s.input(own(s, np.arange(6.0), "p0"), "p0")
        assert not fss.available(x)
        errors = []
        for f in (lambda: s.protocol.provider.dcf((2,), 8, None, 1, 1), lambda: fss.drelu(x)):
            try:
                f()
            except ProtocolError as e:
                errors.append(str(e))
        return errors

    errors = run_ot(prog)["p0"]
    assert "dcf" in errors[0] and "'dealer'" in errors[1]


# -- the oblivious shuffle and what uses it ---------------------------------------------------------------
def test_shuffle_and_ranking_metrics_without_a_dealer():
    """The two-party shuffle (Beneš networks over OT) and the ranking metrics that sort after it,
    against plaintext (sklearn's AUC and average precision)."""
    from sklearn import metrics as skm

    from covault import ml
    from covault.ops.shuffle import shuffle_rows

    g = np.random.default_rng(7)  # test data, not secret
    rows = np.arange(21.0).reshape(7, 3)
    y = (g.random(50) < 0.4).astype(float)
    score = np.round(g.normal(size=50) + y, 3)

    def prog(s):
        x = s.input(own(s, rows, "p0"), "p0")
        ys = s.input(own(s, y, "p0"), "p0", integer=True)
        sc = s.input(own(s, score, "p1"), "p1", bound=16.0)
        auc = ml.roc_auc_score(ys, sc, to=["p0", "p1"])
        ap = ml.average_precision_score(ys, sc, to=["p0", "p1"])
        return shuffle_rows(x).reveal(), auc, ap

    got, auc, ap = run_ot(prog)["p0"]
    assert sorted(map(tuple, got)) == sorted(map(tuple, rows)) and got.tolist() != rows.tolist()
    assert auc == pytest.approx(skm.roc_auc_score(y, score), abs=1e-3)
    assert ap == pytest.approx(skm.average_precision_score(y, score), abs=1e-3)


# -- the demo with two processes only ---------------------------------------------------------------------
def test_demo_job_names_the_provider_and_trains_with_the_shuffle(tmp_path):
    """The demo job under ``ot`` keeps the default oblivious shuffle and reports the ranking
    metrics, close to the plaintext reference."""
    from covault.jobs import run_local
    from covault.jobs.demo import make_breast_cancer_job
    from covault.jobs.spec import load_job

    path = make_breast_cancer_job(tmp_path, 2, "2pc", provider="ot", epochs=2)
    text = path.read_text()
    assert 'provider = "ot"' in text and "shuffle" not in text and "dealer" not in text.split("[model]")[0]
    job = load_job(path)
    assert (
        job.provider == "ot" and job.dealer is None and list(job.data_parties) == ["hospital_a", "hospital_b"]
    )
    assert job.model.get("shuffle", "once") == "once"
    res = run_local(path, transport="local", progress=False, compare_plaintext=True)
    got, plain = res["metrics"], res["plaintext"]["metrics"]
    assert got["accuracy"] > 0.9 and got["auc"] is not None and got["pr_auc"] is not None
    assert abs(got["auc"] - plain["auc"]) < 0.02


@pytest.mark.slow
def test_demo_two_processes_only(tmp_path, capsys):
    from covault.cli import main as cli

    out_dir = tmp_path / "demo"
    assert (
        cli(
            [
                "demo",
                "--protocol",
                "2pc",
                "--provider",
                "ot",
                "--epochs",
                "1",
                "--out",
                str(out_dir),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("covault demo: two hospitals") and "provider 'ot'" in out
    assert "dealer" not in out.split("party")[-1]  # the parties' table: two hospitals, no dealer


def test_a_data_party_inputs_to_the_two_compute_parties():
    """A third party that only brings data (no dealer): its rows are shared to P0 and P1."""
    rows = np.arange(12.0).reshape(4, 3) / 4

    def prog(s):
        x = s.input(rows if s.party == "clinic" else None, "clinic")
        return (x @ x.T).reveal(to=list(s.parties))

    res = covault.run(prog, 2, "2pc", provider="ot", data_parties=["clinic"])
    assert set(res) == {"p0", "p1", "clinic"}
    for got in res.values():
        np.testing.assert_allclose(got, rows @ rows.T, atol=1e-3)


def prog_product_cost(s, n):
    prov = s.protocol.provider
    prov.beaver((8,), (8,), (8,), np.multiply)  # the base OTs, once per pair
    with s.net.scope() as cost:
        prov.beaver((n,), (n,), (n,), np.multiply)
    return cost.as_dict()


def test_a_product_costs_what_the_docstring_says():
    """Per product and party: 64 COTs received (16 bytes of IKNP each) and 64 sent, whose
    correction words for bit t are cast to 8, 4, 2 or 1 bytes (344 bytes in all, not 512)."""
    n = 1000
    res = run_ot(functools.partial(prog_product_cost, n=n))
    for p in ("p0", "p1"):
        assert res[p]["bytes_sent"] == 64 * n * 16 + 344 * n + 3 * 8  # + one batch header
        assert res[p]["rounds"] == 4  # two flights per direction
