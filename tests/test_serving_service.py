"""``covault serve`` and its clients: every serving party its own process over mutual TLS on
loopback; the Python Client and ``covault predict`` get the plaintext model's answers, malformed
rows are refused before anything is sent (the service goes on), and a compute party that dies
makes the client fail naming it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

import covault
from covault.cli import main as cli
from covault.deploy.config import load_config
from covault.errors import EncodingError, PeerError, ShapeError
from covault.serving import Client
from covault.serving.formats import PlainModel
from covault.serving.importer import import_model
from covault.serving.keys import store_folders
from tests.helpers import free_ports, gateway_token, post, tls_consortium, wait_parties
from tests.transcripts import check_transcripts

SERVING = ("a", "b", "dealer")
RNG = np.random.default_rng(14)
W1, B1 = RNG.normal(0, 0.4, (5, 8)), RNG.normal(0, 0.1, 8)
W2, B2 = RNG.normal(0, 0.4, (8, 3)), RNG.normal(0, 0.1, 3)
LAYERS = [
    {"op": "linear", "in": 5, "out": 8},
    {"op": "relu"},
    {"op": "linear", "in": 8, "out": 3},
    {"op": "softmax"},
]
ERR = 3e-3  # fixed point (16 fractional bits) and the softmax's approximation, docs/serving.md


def plain(x):
    h = np.maximum(x @ W1 + B1, 0) @ W2 + B2
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """A 2pc consortium (a, b, the dealer, the model's owner and a client) whose compute
    parties hold the secret model ``risk``, imported from the owner."""
    top = ['protocol = "2pc"', 'dealer = "dealer"', "timeout = 20", 'compute = ["a", "b"]']
    path = tls_consortium(tmp_path_factory.mktemp("serve"), top, [*SERVING, "owner", "client"])
    folder, keys = store_folders(load_config(path))
    model = PlainModel(LAYERS, [W1, B1, W2, B2])
    covault.run(
        lambda s: import_model(s, "owner", model if s.party == "owner" else None, folder, keys, name="risk"),
        ["a", "b"],
        "2pc",
        data_parties=["owner"],
    )
    return path


def start_service(config, *extra):
    cmd = [
        sys.executable,
        "-m",
        "covault",
        "serve",
        str(config),
        "--model",
        "risk",
        "--client",
        "client",
        "--json",
    ]
    return {
        n: subprocess.Popen(
            [*cmd, "--as", n, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in SERVING
    }


def finish(procs, ok=True):
    out = wait_parties(procs, 60)
    if ok:
        for n, (o, e, code) in out.items():
            assert code == 0, (n, e)
    return {n: json.loads(o.splitlines()[-1]) if ok else (code, e) for n, (o, e, code) in out.items()}


def test_client_predicts_like_plaintext_and_survives_malformed_rows(config):
    procs = start_service(config)
    x = RNG.normal(0, 1, (4, 5))
    try:
        with Client(config, as_="client", model="risk") as c:
            assert c.model.n_features == 5  # the public header only
            first = c.predict(x[:1])
            batch = c.predict(x)
            with pytest.raises(ShapeError, match=r"client 'client'.*shape \(n, 5\).*\(2, 4\)"):
                c.predict(x[:2, :4])
            bad = x[:1].copy()
            bad[0, 2] = np.nan
            with pytest.raises(EncodingError, match="NaN or infinite value at index"):
                c.predict(bad)
            bad[0, 2] = 1e6
            with pytest.raises(EncodingError, match="outside the fixed-point range"):
                c.predict(bad)
            again = c.predict(x[3])  # one row as a vector: the service still serves
    finally:
        out = finish(procs)
    np.testing.assert_allclose(first, plain(x[:1]), atol=ERR)
    np.testing.assert_allclose(batch, plain(x), atol=ERR)
    np.testing.assert_allclose(again, plain(x[3:4]), atol=ERR)
    assert {r["queries"] for r in out.values()} == {3}  # refused rows never reached the service


def test_covault_predict_cli(config, tmp_path, capsys):
    x = RNG.normal(0, 1, (3, 5))
    rows = tmp_path / "rows.csv"
    rows.write_text("f1,f2,f3,f4,f5\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in x) + "\n")
    procs = start_service(config)
    try:
        code = cli(
            ["predict", str(config), "--as", "client", "--model", "risk", "--input", str(rows), "--json"]
        )
    finally:
        finish(procs)
    assert code == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    np.testing.assert_allclose(np.array(got["predictions"]), plain(np.round(x, 6)), atol=ERR)


def test_a_compute_party_that_dies_is_named_at_the_client(config):
    procs = start_service(config)
    try:
        with pytest.raises(PeerError, match="party 'b'"):
            with Client(config, as_="client", model="risk") as c:
                c.predict(np.zeros((1, 5)))
                procs["b"].kill()
                procs["b"].wait()
                c.predict(np.zeros((1, 5)))
    finally:
        out = finish(procs, ok=False)
    for n in ("a", "dealer"):  # the others stop too, naming the party
        code, err = out[n]
        assert code == 1 and "PeerError: party 'b'" in err, (n, code, err)


def test_http_gateway(config, tmp_path):
    port, token_file = free_ports(1)[0], tmp_path / "client.token"
    procs = start_service(config)
    gw = [sys.executable, "-m", "covault", "gateway", str(config), "--as", "client", "--model", "risk"]
    gateway = subprocess.Popen(
        [*gw, "--port", str(port), "--token-file", str(token_file)], stderr=subprocess.PIPE, text=True
    )
    x = RNG.normal(0, 1, (2, 5))
    try:
        url = f"http://127.0.0.1:{port}/predict"
        token = gateway_token(url, token_file)
        assert (token_file.stat().st_mode & 0o777) == 0o600
        with pytest.raises(urllib.error.HTTPError) as denied:
            post(url, {"rows": x.tolist()}, "wrong")
        assert denied.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as bad:
            post(url, {"rows": [[1.0, float("nan"), 0, 0, 0]]}, token)
        assert bad.value.code == 400 and "NaN" in json.loads(bad.value.read())["error"]
        got = post(url, {"rows": x.tolist()}, token)
        gateway.send_signal(signal.SIGTERM)  # the client says it is done
        assert gateway.wait(timeout=30) == 0, gateway.stderr.read()
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        out = finish(procs)
    np.testing.assert_allclose(np.array(got["predictions"]), plain(x), atol=ERR)
    assert got["rows"] == 2 and {r["queries"] for r in out.values()} == {1}


def test_the_transcripts_hold_neither_the_query_nor_the_answer(config, tmp_path):
    """Every message a serving party receives, read from every party's transcript (theirs and
    the client's): no array's bytes hold the query rows or the answer (float64, fixed point at 16
    or 32 fractional bits, narrowed words); the two identical queries make every party send
    different words; the words a compute party receives pass a bit-frequency test."""
    x = np.array([[1.2345, -2.5, 0.75, 2.875, -0.3125]])
    procs = start_service(config, "--transcript", str(tmp_path))
    try:
        with Client(config, as_="client", model="risk", transcript_dir=tmp_path) as c:
            answers = [c.predict(x) for _ in range(2)]
    finally:
        finish(procs)
    np.testing.assert_allclose(answers[0], plain(x), atol=ERR)
    assert {p.name for p in tmp_path.glob("*.transcript")} == {
        f"{n}.transcript" for n in (*SERVING, "client")
    }
    values = np.concatenate([x.ravel(), *(a.ravel() for a in answers)])
    scanned = check_transcripts(tmp_path, values, ["a", "b"], ["client"], receivers=SERVING)
    assert scanned > 10_000  # the rows' shares, the dealer's keys and every round of both queries
