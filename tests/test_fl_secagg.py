"""SecAgg+ (covault.fl): the unmasked sum equals the plaintext sum of the quantised updates,
with and without dropouts; the server's view hides every update; errors name round and client."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from covault.errors import BoundError
from covault.fl import shamir
from covault.fl.config import RoundConfig
from covault.fl.errors import MalformedMessageError, SecAggError, TooFewSurvivorsError
from covault.fl.graph import neighbours
from covault.fl.quantise import Quantiser
from covault.fl.server import Server
from covault.fl.simulate import Dropouts, secure_sum

N, DIM = 30, 2000


def updates(n: int, dim: int, seed: int = 0, bits: int = 32):
    """Float updates of norm up to ~3, quantised (clip 2, 16 fractional bits) into Z_2^bits."""
    rng = np.random.default_rng(seed)
    q = Quantiser(clip=2.0, frac_bits=16, bits=bits, max_clients=n)
    floats = [rng.normal(size=dim) * rng.uniform(0.001, 0.07) for _ in range(n)]
    return q, floats, [q.encode(f) for f in floats]


def plain_sum(xs, ids, dtype):
    total = np.zeros(xs[0].shape, dtype=dtype)
    for u in ids:
        total += xs[u]
    return total


def drop_fraction(n: int, fraction: float, seed: int) -> Dropouts:
    """``fraction`` of the clients dropped, spread over the four rounds (half after sharing)."""
    ids = np.random.default_rng(seed).permutation(n)[: round(n * fraction)].tolist()
    q = len(ids) // 4
    return Dropouts(
        {
            1: set(ids[:q]),
            2: set(ids[q : 2 * q]),
            3: set(ids[2 * q : -q or None]),
            4: set(ids[-q:] if q else []),
        }
    )


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("bits", [32, 64])
def test_sum_is_exact_under_dropouts(fraction, bits):
    q, floats, xs = updates(N, DIM, bits=bits)
    cfg = RoundConfig(clients=N, dim=DIM, seed=11, neighbours=12, threshold=5, bits=bits)
    drops = drop_fraction(N, fraction, seed=int(fraction * 100) + bits)
    r = secure_sum(xs, cfg, drops)
    silent_before_masking = drops.gone(3)
    assert r.survivors == sorted(set(range(N)) - silent_before_masking)
    assert set(r.dropped) == drops.before.get(3, set())  # those that shared keys, then vanished
    np.testing.assert_array_equal(r.total, plain_sum(xs, r.survivors, cfg.dtype))
    # decoded: the float sum of the clipped updates, to the rounding error
    want = sum(q.clip_update(floats[u]) for u in r.survivors)
    got = q.decode_sum(r.total, len(r.survivors))
    assert np.max(np.abs(got - want)) <= len(r.survivors) * 2.0**-17 + 1e-12


def test_dropouts_after_masking_stay_in_the_sum():
    _, _, xs = updates(N, DIM, seed=1)
    cfg = RoundConfig(clients=N, dim=DIM, seed=5, neighbours=14, threshold=6)
    late = {0, 3, 7, 8, 20, 21, 29}
    r = secure_sum(xs, cfg, Dropouts({4: late}))
    assert r.survivors == list(range(N)) and r.dropped == []
    np.testing.assert_array_equal(r.total, plain_sum(xs, range(N), cfg.dtype))


def test_complete_graph_default_parameters():
    _, _, xs = updates(8, 100, seed=2)
    cfg = RoundConfig(clients=8, dim=100, seed=1)
    assert (cfg.neighbours, cfg.threshold) == (7, 3)
    r = secure_sum(xs, cfg, Dropouts({3: {2}, 4: {5}}))
    np.testing.assert_array_equal(r.total, plain_sum(xs, r.survivors, cfg.dtype))


def test_graph_is_k_regular_and_public():
    g = neighbours(100, 34, seed=9)
    assert all(len(nb) == 34 for nb in g)
    assert all(u in g[v] for u in range(100) for v in g[u])  # symmetric
    assert g == neighbours(100, 34, seed=9) and g != neighbours(100, 34, seed=10)
    assert RoundConfig(clients=100, dim=1, seed=0).neighbours == 34


def _byte_chi2(data: bytes) -> float:
    counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256)
    expected = len(data) / 256
    return float(((counts - expected) ** 2 / expected).sum())


def test_server_view_is_uniform_and_hides_every_update():
    """Every message the server receives: no client's update (or a slice of it) appears in it,
    masked inputs have uniform bytes and do not compress, and they are uncorrelated with the
    updates; the other messages are public keys, AES-GCM ciphertexts and Shamir shares."""
    n, dim = 12, 4096
    _, _, xs = updates(n, dim, seed=3)
    cfg = RoundConfig(clients=n, dim=dim, seed=2, neighbours=6, threshold=3)
    r = secure_sum(xs, cfg, Dropouts({3: {4}, 4: {9}}))
    everything = b"".join(m for _, _, m in r.server_view)
    for u, x in enumerate(xs):
        raw = x.tobytes()
        assert raw not in everything
        for i in range(0, len(raw) - 64, 4096):  # no 64-byte window of any update
            assert raw[i : i + 64] not in everything, u
    masked = [(u, m) for stage, u, m in r.server_view if stage == 3]
    assert len(masked) == n - 1
    for u, m in masked:
        assert len(zlib.compress(m)) >= len(m)  # incompressible; the update itself compresses
        assert len(zlib.compress(xs[u].tobytes())) < 0.8 * len(m)
        assert _byte_chi2(m) < 400  # 255 degrees of freedom: p ~ 1e-7 for a uniform source
        y = np.frombuffer(m, np.uint32).astype(np.float64)
        corr = np.corrcoef(y, xs[u].view(np.int32).astype(np.float64))[0, 1]
        assert abs(corr) < 0.1
    from covault.fl import wire

    boxes = [ct for stage, _, m in r.server_view if stage == 2 for ct in wire.parse_envelopes(m).values()]
    assert _byte_chi2(b"".join(boxes)) < 400  # AES-GCM: nonce, ciphertext, tag


def test_too_few_survivors_name_the_round_and_count():
    _, _, xs = updates(10, 50)
    cfg = RoundConfig(clients=10, dim=50, seed=1, neighbours=9, threshold=6)
    with pytest.raises(TooFewSurvivorsError, match=r"round 3 \(masked input\): only 5 clients"):
        secure_sum(xs, cfg, Dropouts({3: {0, 1, 2, 3, 4}}))
    with pytest.raises(TooFewSurvivorsError, match=r"round 1 \(advertise keys\): only 4 clients"):
        secure_sum(xs, cfg, Dropouts({1: {0, 1, 2, 3, 4, 5}}))
    with pytest.raises(TooFewSurvivorsError, match=r"round 4 \(unmasking\): only 5 clients"):
        secure_sum(xs, cfg, Dropouts({4: {0, 1, 2, 3, 4}}))


def test_too_few_shares_of_one_client_name_it():
    _, _, xs = updates(20, 50)
    cfg = RoundConfig(clients=20, dim=50, seed=4, neighbours=4, threshold=3)
    g = neighbours(20, 4, 4)
    victim = 0
    gone = set(g[victim][:2])  # two of its four neighbours vanish after masking: 2 < t shares left
    with pytest.raises(
        TooFewSurvivorsError, match=rf"round 4 \(unmasking\): only 2 shares of client {victim}'s"
    ):
        secure_sum(xs, cfg, Dropouts({4: gone}))


def test_malformed_message_names_the_client():
    cfg = RoundConfig(clients=5, dim=10, seed=1, neighbours=4, threshold=2)
    server = Server(cfg)
    msgs = {u: bytes(64) for u in range(5)}
    msgs[3] = b"\x01" * 63
    with pytest.raises(
        MalformedMessageError, match=r"round 1 \(advertise keys\): malformed message from client 3"
    ):
        server.receive_keys(msgs)
    _, _, xs = updates(5, 10)
    from covault.fl.client import Client

    clients = [Client(u, xs[u], cfg) for u in range(5)]
    server = Server(cfg)
    out = server.receive_keys({u: c.advertise() for u, c in enumerate(clients)})
    shares = server.receive_shares({u: clients[u].share_keys(out[u]) for u in range(5)})
    masked = {u: clients[u].masked_input(shares[u]) for u in range(5)}
    masked[2] = masked[2][:-4]
    with pytest.raises(MalformedMessageError, match="malformed message from client 2: masked input"):
        server.receive_masked(masked)


def test_client_refuses_to_reveal_both_shares():
    _, _, xs = updates(5, 10)
    cfg = RoundConfig(clients=5, dim=10, seed=1, neighbours=4, threshold=2)
    from covault.fl import wire
    from covault.fl.client import Client

    clients = [Client(u, xs[u], cfg) for u in range(5)]
    server = Server(cfg)
    out = server.receive_keys({u: c.advertise() for u, c in enumerate(clients)})
    shares = server.receive_shares({u: clients[u].share_keys(out[u]) for u in range(5)})
    for u in range(5):
        clients[u].masked_input(shares[u])
    with pytest.raises(SecAggError, match=r"both shares of clients \[1\]"):
        clients[0].unmask(wire.unmask_request([1, 2], [1]))


def test_quantiser_overflow_bound():
    Quantiser(clip=1.0, frac_bits=16, bits=32, max_clients=32767)
    with pytest.raises(BoundError, match=r"sum of 32768 clients.*2\^31"):
        Quantiser(clip=1.0, frac_bits=16, bits=32, max_clients=32768)
    q = Quantiser(clip=1.0, frac_bits=16, bits=64, max_clients=10**6)
    with pytest.raises(BoundError, match="exceeds max_clients"):
        q.decode_sum(np.zeros(3, np.uint64), 10**6 + 1)
    v = np.array([3.0, 4.0])  # norm 5 -> clipped to norm 1
    np.testing.assert_allclose(q.clip_update(v), [0.6, 0.8])


@pytest.mark.parametrize("t,k", [(1, 1), (2, 3), (3, 5), (5, 9)])
def test_shamir_any_t_shares_recover_and_t_minus_1_do_not(t, k):
    import itertools
    import secrets

    secret = secrets.randbits(256)
    shares = shamir.split(secret, t, range(1, k + 1))
    for subset in itertools.combinations(shares, t):
        assert shamir.reconstruct({x: shares[x] for x in subset}, t) == secret
    if t > 1:
        few = dict(list(shares.items())[: t - 1])
        with pytest.raises(SecAggError, match=f"{t - 1} shares, fewer than the threshold {t}"):
            shamir.reconstruct(few, t)
        # t - 1 shares fit every secret: a degree t-1 polynomial through them and (0, s') exists
        other = (secret + 1) % shamir.PRIME
        padded = {**few, 0: other}
        assert shamir.reconstruct(padded, t) == other


def test_shamir_bytes_roundtrip_and_bounds():
    assert shamir.from_bytes(shamir.to_bytes(shamir.PRIME - 1)) == shamir.PRIME - 1
    with pytest.raises(ValueError):
        shamir.from_bytes(b"\xff" * shamir.SHARE_BYTES)
    with pytest.raises(SecAggError, match="threshold 4"):
        shamir.split(5, 4, [1, 2, 3])
