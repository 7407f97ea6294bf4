"""Gradient inversion: exact and optimisation attacks recover images from a plaintext federated
update; the same attacks on one compute party's view of a real covault training run do no better
than guessing; ``covault demo --attack --json`` runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("torch")

from covault.privacy.attacks import analytic, mpc_view
from covault.privacy.attacks.digits import (
    baselines,
    best_match,
    distinct_labels,
    load_digits,
    mse,
    psnr,
    to_image,
)
from covault.privacy.attacks.dlg import dlg, restore_labels
from covault.privacy.attacks.model import mlp, update

DATA, LABELS = load_digits()
IDX = distinct_labels(LABELS, 4)
X, Y = DATA[IDX], LABELS[IDX]


def test_analytic_inversion_recovers_a_batch_one_image_exactly():
    model = mlp(32, seed=0)
    for i in range(len(X)):
        g = update(model, X[i], Y[i])
        assert mse(analytic.reconstruct(g[0], g[1]), X[i])[0] < 1e-10
        assert np.allclose(analytic.invert_linear(g[0], g[1]), X[i], atol=1e-8)  # every active row


def test_analytic_inversion_refuses_an_update_without_input():
    with pytest.raises(ValueError, match="no bias gradient above"):
        analytic.reconstruct(np.zeros((32, 64)), np.zeros(32))
    with pytest.raises(ValueError, match="one bias gradient per row"):
        analytic.invert_linear(np.zeros((32, 64)), np.zeros(31))


def test_dlg_and_idlg_reconstruct_a_batch_one_image():
    model = mlp(32, seed=0)
    g = update(model, X[0], Y[0])
    labels = restore_labels(g[3], 1)
    assert labels.tolist() == [Y[0]]  # iDLG's label
    for known in (labels, None):
        rec = dlg(model, g, 1, labels=known, iterations=10, seed=0)
        assert psnr(mse(to_image(rec), X[0]))[0] > 30.0


@pytest.mark.processes
@pytest.mark.parametrize("protocol", ["2pc", "rep3"])
def test_a_compute_partys_view_of_covault_training_is_no_better_than_guessing(tmp_path, protocol):
    """Over TCP with TLS, every message recorded: a compute party's received arrays, its own messages, the
    openings and its shares, read every way (mpc_view.candidates), and the best candidate per image
    chosen with the originals in hand, stay worse than the dataset's mean image and than the best of
    as many random other images; the same reading of a plaintext update finds the image exactly."""
    shares = mpc_view.train_under_mpc(X, Y, tmp_path, protocol=protocol, transport="tcp")
    base_mean = mse(np.broadcast_to(DATA.mean(0), X.shape), X)
    for party in ("p0", "p1"):
        view = mpc_view.party_view(tmp_path, party, shares[party])
        assert view["received"] and view["opened"] and len(view["shares"]) == 4
        cand = mpc_view.candidates(view)
        assert len(cand) > 1000
        _, best = best_match(cand, X)
        guess = baselines(X, IDX, DATA, len(cand))["best_of_tries"]
        assert np.all(best > base_mean), (party, best, base_mean)
        assert np.all(best > 2 * guess), (party, best, guess)
        g = mpc_view.gradient_guess(view)
        one = to_image(analytic.invert_linear(g[0], g[1], tol=0.0)[0])
        assert np.all(mse(one, X) > base_mean), party
    plain = update(mlp(32, 0), X[:1], Y[:1])
    control = {
        "received": [np.rint((a.T if a.ndim == 2 else a) * 2.0**16).astype(np.int64) for a in plain],
        "sent": [],
        "opened": [],
        "shares": [],
    }
    _, err = best_match(mpc_view.candidates(control), X[:1])
    assert err[0] < 1e-6


@pytest.mark.processes
@pytest.mark.slow
def test_demo_attack_json_and_report(tmp_path, capsys):
    from covault.cli import main as cli

    out = tmp_path / "attack"
    assert cli(["demo", "--attack", "--protocol", "2pc", "--json", "--out", str(out)]) == 0
    stdout, _ = capsys.readouterr()
    result = json.loads(stdout.strip().splitlines()[-1])
    fed = {r["setting"]: r for r in result["federated"]}
    assert fed["analytic inversion, batch 1"]["recovered"] == 4
    mean_image = result["baselines"]["mean_image"]["mean_mse"]
    assert all(r["mean_mse"] > mean_image for r in result["mpc"]["attacks"])
    assert result["mpc"]["control"]["psnr"] > 60
    assert [r["clients"] for r in result["secure_aggregation"]] == [1, 4, 16, 64]
    assert result["dp"]["rows"][1]["epsilon"] == 1.0 and result["dp"]["rows"][1]["noise_multiplier"] > 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Reconstruction error per setting" in html
    assert (out / "attack.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "attack.json").read_text())["images"] == result["images"]
