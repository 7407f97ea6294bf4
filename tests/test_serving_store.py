"""Secret models at rest (covault.serving): each compute party's shares, encrypted under its own
key, load back into a session and predict like the plaintext model; the files hold no weight,
look uniform, and a wrong key, an altered byte or another party's file is refused by name."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import covault
from covault.serving import ModelStoreError, SecretModel, load_model, model_file, save_model
from covault.serving.keys import key_path, party_key
from covault.serving.store import MAGIC
from tests.helpers import PROTOCOLS, bit_balance_z, owner_value

RNG = np.random.default_rng(5)
W1, B1 = RNG.normal(0, 0.4, (30, 64)), RNG.normal(0, 0.1, 64)
W2, B2 = RNG.normal(0, 0.4, (64, 2)), RNG.normal(0, 0.1, 2)
X = RNG.normal(0, 1, (6, 30))
MLP = [{"op": "linear", "in": 30, "out": 64}, {"op": "relu"}, {"op": "linear", "in": 64, "out": 2}]
WEIGHTS = (W1, B1, W2, B2)


def plain_mlp(x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ W1 + B1, 0) @ W2 + B2
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _save(store, layers=(*MLP, {"op": "softmax"}), name="mlp"):
    def program(s):
        ws = [s.input(owner_value(s, w), owner=s.compute_parties[0]) for w in WEIGHTS]
        return save_model(s, SecretModel(name, "sequential", list(layers), ws), store, store / "keys")

    return program


def _load_predict(store, name="mlp", **kw):
    def program(s):
        model = load_model(s, store, name, **kw)
        return model.forward(s.input(owner_value(s, X), owner=s.compute_parties[0])).reveal()

    return program


@pytest.mark.parametrize("proto", PROTOCOLS, ids=[p[0] for p in PROTOCOLS])
def test_round_trip_predicts_like_the_plaintext_model(tmp_path, proto):
    name, n = proto
    saved = covault.run(_save(tmp_path), n, name)
    compute = [p for p in saved if p != "dealer"]
    for p in compute:
        assert saved[p]["path"] == str(model_file(tmp_path, "mlp", p))
        assert os.stat(saved[p]["path"]).st_mode & 0o777 == 0o600
        assert os.stat(key_path(tmp_path / "keys", p)).st_mode & 0o777 == 0o600
    assert len({r["model_id"] for r in saved.values()}) == 1
    assert not list(tmp_path.glob("*dealer*"))  # the 2pc dealer stores nothing
    out = covault.run(_load_predict(tmp_path), n, name)
    np.testing.assert_allclose(out[compute[0]], plain_mlp(X), atol=2e-3)


def test_the_file_holds_no_weight_and_looks_uniform(tmp_path):
    res = covault.run(_save(tmp_path), 3, "rep3")
    for party in res:
        blob = model_file(tmp_path, "mlp", party).read_bytes()
        for w in WEIGHTS:
            for v in w.reshape(-1)[:50]:
                assert np.float64(v).tobytes() not in blob
                assert np.int64(round(v * 2**16)).tobytes() not in blob
        size = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 4], "little")
        body = blob[len(MAGIC) + 4 + size :]  # nonce and ciphertext
        counts = np.bincount(np.frombuffer(body, np.uint8), minlength=256)
        expect = len(body) / 256
        assert np.abs(counts - expect).max() < 6 * np.sqrt(expect)
        # with the key: this party's shares only, uniform words
        key = party_key(tmp_path / "keys", party, create=False)
        from covault.serving.store import read_shares

        _, arrays = read_shares(model_file(tmp_path, "mlp", party), key, party, {})
        assert arrays[0].shape == (2, 30, 64)
        assert bit_balance_z(np.concatenate([a.reshape(-1) for a in arrays])) < 6


def _refused(tmp_path, match):
    with pytest.raises(ModelStoreError, match=match) as info:
        covault.run(_load_predict(tmp_path), 3, "rep3")
    return str(info.value)


def test_wrong_key_tampered_byte_and_another_partys_file_are_refused_by_name(tmp_path):
    covault.run(_save(tmp_path), 3, "rep3")
    f1 = model_file(tmp_path, "mlp", "p1")
    original = f1.read_bytes()
    key = key_path(tmp_path / "keys", "p1")
    good_key = key.read_bytes()

    key.write_bytes(os.urandom(32))
    msg = _refused(tmp_path, "does not decrypt")
    assert "'p1'" in msg and str(f1) in msg
    key.write_bytes(good_key)

    flipped = bytearray(original)
    flipped[-40] ^= 1
    f1.write_bytes(bytes(flipped))
    assert str(f1) in _refused(tmp_path, "party 'p1'.*does not decrypt")

    header_edit = original.replace(b'"frac":16', b'"frac":17', 1)
    assert header_edit != original
    f1.write_bytes(header_edit)
    _refused(tmp_path, "party 'p1'.*does not decrypt")  # the header is authenticated

    shutil.copy(model_file(tmp_path, "mlp", "p2"), f1)  # p2's file under p1's name
    assert "is for party 'p2', not 'p1'" in _refused(tmp_path, "party 'p1'")

    f1.write_bytes(original)
    key.chmod(0o644)
    _refused(tmp_path, "p1.store.key is readable by others")
    key.chmod(0o600)
    np.testing.assert_allclose(covault.run(_load_predict(tmp_path), 3, "rep3")["p0"], plain_mlp(X), atol=2e-3)


def test_another_protocol_or_save_is_refused(tmp_path):
    covault.run(_save(tmp_path), 3, "rep3")
    other = tmp_path / "other"
    covault.run(_save(other), 3, "rep3")
    with pytest.raises(ModelStoreError, match="is for protocol 'rep3', not '2pc'"):
        covault.run(_load_predict(tmp_path), 2, "2pc", provider="dealer")
    shutil.copy(model_file(other, "mlp", "p2"), model_file(tmp_path, "mlp", "p2"))
    shutil.copy(key_path(other / "keys", "p2"), key_path(tmp_path / "keys", "p2"))
    with pytest.raises(ModelStoreError, match=r"party 'p2'.*differs from party 'p0'.*model_id"):
        covault.run(_load_predict(tmp_path), 3, "rep3")


def test_a_key_file_is_created_once_exclusively(tmp_path):
    a = party_key(tmp_path / "k", "p0")
    assert party_key(tmp_path / "k", "p0") == a and len(a) == 32
    assert party_key(tmp_path / "k", "p1") != a
    with pytest.raises(ModelStoreError, match="party 'p9': no at-rest key"):
        party_key(tmp_path / "k", "p9", create=False)
    with pytest.raises(ModelStoreError, match=r"model name '\.\./x'"):
        model_file(tmp_path, "../x", "p0")


@pytest.mark.parametrize("task", ["mlp", "linear_regression"])
def test_a_trained_estimator_round_trips(tmp_path, task):
    from covault import ml
    from covault.serving.model import from_estimator

    gen = np.random.default_rng(2)
    x = gen.normal(0, 1, (40, 3))
    y = (x[:, 0] > 0).astype(float) if task == "mlp" else x @ [1.0, -2.0, 0.5]

    def program(s):
        owner = s.compute_parties[0]
        xs, ys = s.input(owner_value(s, x), owner=owner), s.input(owner_value(s, y), owner=owner)
        est = (
            ml.MLPClassifier(hidden=(4,), epochs=1, seed=1)
            if task == "mlp"
            else ml.LinearRegression(epochs=2)
        )
        est.fit(xs, ys)
        save_model(s, from_estimator(est, "m", task), tmp_path, tmp_path / "keys")
        model = load_model(s, tmp_path, "m")
        public = est.reveal()
        return model.kind, public, model.forward(xs[:5]).reveal()

    kind, public, out = covault.run(program, 3, "rep3")["p0"]
    assert kind == task
    if task == "mlp":
        np.testing.assert_allclose(out, public.predict_proba(x[:5]), atol=3e-3)
    else:
        assert out.shape == (5,)
        np.testing.assert_allclose(out, public.predict(x[:5]), atol=3e-3)
