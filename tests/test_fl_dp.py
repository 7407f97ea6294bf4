"""Distributed DP noise in secure aggregation (covault.fl.dp): each client's part on the grid,
the sum exact in the ring, its noise of the stated variance, the overflow bound with its margin."""

from __future__ import annotations

import numpy as np
import pytest

from covault.errors import BoundError
from covault.fl import dp
from covault.fl.config import RoundConfig
from covault.fl.quantise import NOISE_TAIL, Quantiser
from covault.fl.simulate import Dropouts, secure_sum


def test_noisy_sum_is_exact_and_has_the_stated_variance():
    n, dim, sigma, honest = 12, 20000, 0.5, 6
    per_client = dp.client_sigma(sigma, honest)
    q = Quantiser(clip=1.0, frac_bits=16, bits=32, max_clients=n, noise_sigma=per_client)
    rng = np.random.default_rng(0)
    updates = [rng.normal(size=dim) * 0.005 for _ in range(n)]
    noises = [dp.client_noise(dim, sigma, honest, 16) for _ in range(n)]
    assert all(np.array_equal(z * 2**16, np.rint(z * 2**16)) for z in noises)  # on the grid
    xs = [q.encode(u, z) for u, z in zip(updates, noises, strict=True)]
    cfg = RoundConfig(clients=n, dim=dim, seed=3, neighbours=8, threshold=4)
    r = secure_sum(xs, cfg, Dropouts({3: {1, 2}}))
    want = np.zeros(dim, np.uint32)
    for u in r.survivors:
        want += xs[u]
    np.testing.assert_array_equal(r.total, want)
    total = q.decode_sum(r.total, len(r.survivors))
    clean = sum(q.clip_update(updates[u]) for u in r.survivors)
    residual = total - clean
    expected = sigma * np.sqrt(len(r.survivors) / honest)  # 10 survivors each adding sigma^2 / 6
    assert abs(residual.std() / expected - 1) < 0.05
    assert abs(residual.mean()) < 5 * expected / np.sqrt(dim)


def test_noise_margin_in_the_overflow_bound():
    per_client = 100.0
    limit = int(2**31 / ((1.0 + NOISE_TAIL * per_client) * 2**16 + 0.5))
    Quantiser(clip=1.0, frac_bits=16, bits=32, max_clients=limit, noise_sigma=per_client)
    with pytest.raises(BoundError, match="noise sigma 100"):
        Quantiser(clip=1.0, frac_bits=16, bits=32, max_clients=limit + 1, noise_sigma=per_client)
    q = Quantiser(clip=1.0, frac_bits=16, bits=32, max_clients=2, noise_sigma=0.01)
    with pytest.raises(BoundError, match="noise beyond"):
        q.encode(np.zeros(2), np.array([0.0, 1.0]))


def test_epsilon_falls_with_more_noise():
    pytest.importorskip("dp_accounting")
    loose, tight = dp.epsilon(0.8, 20, 1e-5), dp.epsilon(2.0, 20, 1e-5)
    assert tight < loose and np.isfinite(loose)


def test_client_level_epsilon_is_replace_one():
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting import pld

    # the server sees who took part: a neighbour replaces one client's update (the sum moves by
    # up to 2 clip); add/remove-one said 30.1 for these settings
    acc = pld.PLDAccountant(dp_accounting.NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-3)
    acc.compose(dp_accounting.GaussianDpEvent(1.0), 20)
    assert dp.epsilon(1.0, 20, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-4)
    assert dp.epsilon(1.0, 20, 1e-5) == pytest.approx(77.33, abs=0.01)
