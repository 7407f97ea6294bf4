"""Training guards of the ML layer: learning-rate limit, divergence warning, memory estimate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import covault
from covault import ml
from covault.errors import ResourceError, TrainingDivergedWarning
from covault.ml import mlp
from covault.ml.linear import check_loss_curve, loss_divergence


# -- learning rate -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ml.LogisticRegression, ml.LinearRegression, ml.MLPClassifier])
@pytest.mark.parametrize("lr", [10.5, 1e9, math.inf])
def test_learning_rate_above_the_maximum_is_refused(cls, lr):
    with pytest.raises(ValueError, match=r"learning_rate must be at most 10 .*, got "):
        cls(learning_rate=lr)
    assert cls(learning_rate=10).learning_rate == 10.0


# -- divergence --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "est, curve, reason",
    [
        (ml.LogisticRegression(), [0.6, 0.5, 0.45], None),
        (ml.LogisticRegression(), [0.6, 1.2, 1.5], "the loss after epoch 3 is 1.5, more than 2 times the trivial model's loss (0.6931)"),
        (ml.LogisticRegression(), [0.6, math.nan], "the loss after epoch 2 is nan"),
        (ml.LogisticRegression(learning_rate=4), [0.6, math.inf], "the loss after epoch 2 is inf; lower learning_rate (now 4)"),
        (ml.LinearRegression(), [-135509.3, 0.2], "the loss after epoch 1 is -1.355e+05, below 0 (the fixed-point values overflowed)"),
        (ml.LinearRegression(), [0.5, 2.5], "more than 2 times the trivial model's loss (1)"),
        (ml.LinearRegression(), [0.5, 1.9], None),
        (ml.LinearRegression(standardize=False), [10.0, 19.0], None),
        (ml.LinearRegression(standardize=False), [10.0, 25.0], "more than 2 times the loss after epoch 1 (10)"),
        (ml.MLPClassifier(n_classes=3), [1.0, 2.1], None),
        (ml.MLPClassifier(n_classes=3), [1.0, 2.3], "more than 2 times the trivial model's loss (1.099)"),
        (ml.MLPClassifier(), [0.3, 0.0, -0.01], None),  # fixed-point rounding around a perfect fit
    ],
)  # fmt: skip
def test_loss_divergence_rule(est, curve, reason):
    got = loss_divergence(est, np.array(curve))
    if reason is None:
        assert got is None
    else:
        assert got.startswith("training diverged: ") and reason in got
        assert got.endswith(f"lower learning_rate (now {est.learning_rate:g})")


def fit_linear_regression(learning_rate: float):
    """A secure 3-party linear regression on 60 rows for 2 epochs; the revealed loss curve and
    the estimator (at P0)."""
    gen = np.random.default_rng(5)
    x = gen.normal(0, 1, (60, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3.0

    def prog(s):
        xs = s.input(x if s.party == "p0" else None, owner="p0")
        ys = s.input(y if s.party == "p0" else None, owner="p0")
        est = ml.LinearRegression(epochs=2, learning_rate=learning_rate, batch_size=16)
        est.fit(xs, ys, track_loss=True)
        return est, est.loss_curve_.reveal("p0")

    return covault.run(prog)["p0"]


def test_check_loss_curve_warns_when_a_secure_fit_diverges():
    est, curve = fit_linear_regression(10.0)
    with pytest.warns(TrainingDivergedWarning, match=r"^training diverged: the loss after epoch"):
        reason = check_loss_curve(est, curve)
    assert "lower learning_rate (now 10)" in reason
    est, curve = fit_linear_regression(0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_loss_curve(est, curve) is None


# -- memory ------------------------------------------------------------------------------------------
def test_memory_estimate_formula():
    sgd = mlp.memory_estimate(30, (64,), 2, rows=500, rows_at_once=400)
    weights = 31 * 64 + 65 * 2
    assert (
        sgd
        == mlp.WEIGHT_BYTES["sgd"] * weights + mlp.ACTIVATION_BYTES * 400 * 64 + mlp.INPUT_BYTES * 500 * 30
    )
    assert mlp.memory_estimate(30, (64,), 2, 500, 400, optimizer="adam") > sgd
    assert mlp.memory_estimate(30, (64, 128), 2, 500, 400) > sgd
    est = ml.MLPClassifier(hidden=(64,))
    assert est.memory_bytes(30, 500, 400) == sgd
    assert mlp.format_bytes(2.81e12) == "2810 GB" and mlp.format_bytes(2.5e9) == "2.5 GB"
    assert mlp.format_bytes(6.4e8) == "640 MB"
    assert mlp.describe_network(4, (10, 20), 7) == "hidden layers of 10, 20 units, 4 features, 7 rows at once"


def test_available_memory_reads_meminfo_and_the_cgroup_limit(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal:  24000000 kB\nMemAvailable:  20000000 kB\n")
    cg = tmp_path / "cg"
    cg.mkdir()
    monkeypatch.setattr(mlp, "MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(mlp, "CGROUP_MEMORY", ((str(cg), "memory.max", "memory.current", "inactive_file"),))
    assert mlp.available_memory() == 20000000 * 1024  # no cgroup files: MemAvailable
    (cg / "memory.max").write_text("max\n")
    (cg / "memory.current").write_text("1000\n")
    assert mlp.available_memory() == 20000000 * 1024  # no limit
    (cg / "memory.max").write_text("8000000000\n")
    (cg / "memory.current").write_text("3000000000\n")
    (cg / "memory.stat").write_text("anon 2000000000\ninactive_file 500000000\n")
    assert mlp.available_memory() == 5_500_000_000  # the limit's room, cache counted as free
    monkeypatch.setattr(mlp, "MEMINFO", str(tmp_path / "none"))
    assert mlp.available_memory() == 5_500_000_000


def small_mlp_fit(hidden, monkeypatch, free=None):
    """``MLPClassifier(hidden).fit`` on 30 secret rows at three parties; fails if the network
    gets built (the guard must refuse before anything is allocated)."""

    def no_build(self, d):
        raise AssertionError("the network was built before the memory check")

    monkeypatch.setattr(mlp.MLPClassifier, "_build", no_build)
    if free is not None:
        monkeypatch.setattr(mlp, "available_memory", lambda: free)
    x = np.random.default_rng(1).normal(0, 1, (30, 4))
    y = (x[:, 0] > 0).astype(float)

    def prog(s):
        xs = s.input(x if s.party == "p0" else None, owner="p0")
        ys = s.input(y if s.party == "p0" else None, owner="p0")
        return ml.MLPClassifier(hidden=hidden).fit(xs, ys)

    return covault.run(prog)


def test_mlp_fit_refuses_a_network_larger_than_memory_before_allocating(monkeypatch):
    with pytest.raises(
        ResourceError,
        match=r"party 'p[012]': MLPClassifier\.fit needs about \d+ GB of memory per party \(hidden layer "
        r"of 100000000 units, 4 features, 30 rows at once\); this host has .* available",
    ):
        small_mlp_fit((100_000_000,), monkeypatch)
    need = ml.MLPClassifier(hidden=(200_000,)).memory_bytes(4, 30, 30)
    with pytest.raises(ResourceError, match=r"needs about 2\.0 GB .*; this host has 1\.0 GB available"):
        small_mlp_fit((200_000,), monkeypatch, free=int(1e9))
    with pytest.raises(AssertionError, match="the network was built"):  # enough memory: it goes on
        small_mlp_fit((200_000,), monkeypatch, free=need)


CALIBRATE = textwrap.dedent(
    """
    import json, re, sys
    import numpy as np
    import covault
    from covault import ml, ring

    def status(key):  # kB in /proc/self/status
        return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    protocol, hidden, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x = np.random.default_rng(0).normal(0, 1, (rows, 10))
    y = (x[:, 0] > 0).astype(float)
    parties = 2 if protocol == "2pc" else 3

    def prog(s):
        xs = s.input(x if s.party == "p0" else None, owner="p0")
        ys = s.input(y if s.party == "p0" else None, owner="p0")
        ml.MLPClassifier(hidden=(hidden,), epochs=1, batch_size=64).fit(xs, ys, track_loss=True)

    ring.load_matmul_engine()
    covault.run(lambda s: None, parties, protocol=protocol)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets the peak (VmHWM) to the current resident size
    before = status("VmRSS")
    covault.run(prog, parties, protocol=protocol, timeout=300)
    print(json.dumps({"per_party": (status("VmHWM") - before) / 3}))
    """
)


@pytest.mark.parametrize("protocol", ["rep3", "2pc"])
def test_memory_estimate_covers_a_measured_training_peak(protocol):
    """One process trains a 10 -> 2000 -> 2 MLP on 300 rows (loss tracked: all rows at once);
    its peak memory per party (three parties: rep3, or 2pc's two and the dealer) lies below the
    estimate and above a third of it."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak")
    done = subprocess.run(
        [sys.executable, "-c", CALIBRATE, protocol, "2000", "300"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])["per_party"]
    estimate = mlp.memory_estimate(10, (2000,), 2, rows=300, rows_at_once=300)
    assert estimate / 3 < measured < estimate, (measured, estimate)
