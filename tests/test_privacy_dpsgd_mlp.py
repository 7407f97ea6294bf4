"""DP-SGD inside MPC for the MLP: against its plaintext float64 twin, the clip factors against
plaintext per-example gradient norms, the secret noise's variance in the update, and jobs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import covault
from covault import ml
from covault.errors import BoundError
from covault.ml.dp import mlp_clip_factors, reference_clip_factors, reference_dpsgd_mlp
from covault.privacy.dpsgd import DPSGD, poisson_positions
from tests.helpers import IDS, VARIANTS, owner_value
from tests.test_privacy_dpsgd import SEED, XS, YS, N, _dp_job  # breast cancer in [0, 1], as encoded

pytest.importorskip("dp_accounting")

KW = dict(
    hidden=(8,), n_classes=2, epochs=1, batch_size=32, standardize=False, shuffle="none", seed=1,
    learning_rate=0.5, momentum=0.5,
)  # fmt: skip


def _fit(s, kw, privacy, x=XS, y=YS):
    xs = s.input(owner_value(s, x), owner=s.compute_parties[0], bound=1.5)
    ys = s.input(owner_value(s, y, s.compute_parties[-1]), owner=s.compute_parties[-1])
    est = ml.MLPClassifier(**kw).fit(xs, ys, privacy=privacy)
    return [w.reveal() for w in est.secret_coefs_], [b.reveal() for b in est.secret_intercepts_], est.privacy_


def _noise_off_against_twin(proto: str, n: int, n_classes: int, y: np.ndarray) -> float:
    """The largest difference of the secure DP-SGD weights (noise off) from the twin's; checks
    that the clipping was active."""
    kw = dict(KW, hidden=(8, 6), n_classes=n_classes, alpha=0.01)
    priv = DPSGD(noise_multiplier=0.0, max_grad_norm=0.3, sampling_seed=SEED)
    ws, bs, info = covault.run(lambda s: _fit(s, kw, priv, y=y), n, proto)["p0"]
    q, steps = priv.schedule(N, 32, 1)
    assert info["steps"] == steps == 10 and info["epsilon_spent"] == math.inf
    positions = poisson_positions(SEED, N, q, steps)
    twin = ml.ReferenceMLPClassifier(**kw)
    rw, rb = reference_dpsgd_mlp(twin, XS, y, priv, positions)
    err = max(np.abs(a - b).max() for a, b in zip(ws + bs, rw + rb))
    # the clipping was active: without it the twin lands far away
    uw, _ = reference_dpsgd_mlp(twin, XS, y, DPSGD(noise_multiplier=0.0, max_grad_norm=100.0), positions)
    assert max(np.abs(a - b).max() for a, b in zip(uw, rw)) > 100 * err
    return err


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_noise_off_equals_plaintext_clipped_sgd(proto):
    assert _noise_off_against_twin(*proto, 2, YS) < 3e-4


def test_noise_off_equals_twin_three_classes():
    """The softmax of three classes (exponentials and a reciprocal: a larger fixed-point error)."""
    y = (XS[:, 0] > 0.2).astype(float) + (XS[:, 1] > 0.3)
    assert _noise_off_against_twin("rep3", 3, 3, y) < 2e-3


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_clip_factors_against_plaintext_norms(proto):
    name, n = proto
    C, B = 0.7, 40
    rng = np.random.default_rng(3)  # public test values
    h0 = np.round(rng.uniform(0, 1, (B, 5)) * 2**16) / 2**16
    h1 = np.round(rng.uniform(0, 2, (B, 4)) * 2**16) / 2**16
    d0 = np.round(rng.normal(0, 0.1, (B, 4)) * 2**16) / 2**16
    d1 = np.round(rng.normal(0, 0.2, (B, 3)) * 2**16) / 2**16
    d1[0] = [50.0, 0.0, 0.0]  # |d|^2 beyond 2^11: the row is dropped
    d0[1], d1[1] = 0.0, 0.0  # a zero gradient: factor 1

    def prog(s):
        put = lambda v, bound=None: s.input(owner_value(s, v), owner=s.compute_parties[0], bound=bound)  # noqa: E731
        return mlp_clip_factors([put(h0, 1.0), put(h1)], [put(d0), put(d1)], C).reveal()

    c = covault.run(prog, n, name)["p0"][:, 0]
    per_layer = [np.c_[h, np.ones(B)][:, :, None] * d[:, None, :] for h, d in ((h0, d0), (h1, d1))]
    norms = np.sqrt(sum((g**2).sum(axis=(1, 2)) for g in per_layer))  # materialised per-example gradients
    want = np.where(np.arange(B) == 0, 0.0, np.minimum(1.0, C / np.maximum(norms, 1e-300)))
    np.testing.assert_allclose(c, want, rtol=2e-5, atol=2**-16)
    np.testing.assert_allclose(reference_clip_factors([h0, h1], [d0, d1], C), want, rtol=1e-12)
    assert (norms[2:] > C).sum() >= 8 and (norms[2:] < C).sum() >= 8  # both cases exercised


def test_clipping_refuses_unbounded_features():
    def prog(s):
        x = s.input(owner_value(s, XS[:4]), owner=s.compute_parties[0])  # default bound 2^15
        d = s.input(owner_value(s, np.zeros((4, 2))), owner=s.compute_parties[0])
        mlp_clip_factors([x], [d], 1.0)

    with pytest.raises(BoundError, match="layer 1"):
        covault.run(prog, 2, "2pc")


@pytest.mark.parametrize("proto", VARIANTS, ids=IDS)
def test_secret_noise_variance_in_the_update(proto):
    """One step over every row (q = 1), no momentum: the secure weights minus the noiseless
    twin's are ``-lr noise / n``, one sample per parameter of the summed parts' variance."""
    name, n = proto
    rows = 64
    kw = dict(KW, hidden=(64,), batch_size=rows, learning_rate=1.0, momentum=0.0)
    sigma, C = 1.3, 0.8
    priv = DPSGD(noise_multiplier=sigma, max_grad_norm=C, sampling_seed=SEED)
    ws, bs, info = covault.run(lambda s: _fit(s, kw, priv, XS[:rows], YS[:rows]), n, name)["p0"]
    assert info["steps"] == 1
    rw, rb = reference_dpsgd_mlp(
        ml.ReferenceMLPClassifier(**kw), XS[:rows], YS[:rows], priv, [np.arange(rows)]
    )
    z = np.concatenate([(b - a).reshape(-1) for a, b in zip(ws + bs, rw + rb)]) * rows
    k = n
    want = k / (k - 1) * (sigma * C) ** 2
    assert z.size == 30 * 64 + 64 + 64 * 2 + 2
    # 2114 samples: the variance estimate's relative sd is sqrt(2 / 2114) = 3%; 15% is 5 sd
    assert abs(z.var() / want - 1) < 0.15
    assert abs(z.mean()) < 5 * math.sqrt(want / z.size)
    assert info["noise_std"] == pytest.approx(math.sqrt(want))


def test_refusals():
    priv = DPSGD(noise_multiplier=1.0)
    with pytest.raises(ValueError, match="standardize"):
        covault.run(lambda s: _fit(s, dict(KW, standardize=True), priv), 2, "2pc")
    with pytest.raises(ValueError, match="optimizer"):
        covault.run(lambda s: _fit(s, dict(KW, optimizer="adam"), priv), 2, "2pc")


# -- jobs ------------------------------------------------------------------------------------------
def _mlp_job(tmp_path, privacy: str, model: str = "standardize = false\nhidden = [8]\n"):
    path = _dp_job(tmp_path, privacy, model)
    path.write_text(path.read_text().replace('task = "logistic_regression"', 'task = "mlp"'))
    return path


def test_mlp_dp_job_reports_epsilon(tmp_path):
    from covault.jobs import run_local
    from covault.privacy import accountant

    path = _mlp_job(tmp_path, "[privacy]\nnoise_multiplier = 2.0\ndelta = 1e-6\nmax_grad_norm = 1.0\n")
    res = run_local(path, transport="local", progress=False)
    info = res["privacy"]
    assert info["noise_multiplier"] == 2.0 and info["max_grad_norm"] == 1.0 and res["delta"] == 1e-6
    want = accountant.epsilon_for(2.0, info["sample_rate"], info["steps"], 1e-6)
    assert res["epsilon_spent"] == pytest.approx(want) and 1 < want < 10
    assert res["loss_curve"] is None and res["metrics"]["accuracy"] > 0.6


def test_mlp_dp_job_refuses_adam(tmp_path):
    from covault.jobs import JobError, load_job

    with pytest.raises(JobError, match="optimizer"):
        load_job(_mlp_job(tmp_path, "[privacy]\nepsilon = 1\n", 'standardize = false\noptimizer = "adam"\n'))
