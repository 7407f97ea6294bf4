"""``covault serve --many`` against misbehaving clients and parties: every party its own process
over mutual TLS on loopback. A query above ``--max-query-rows`` is refused to its client alone;
connections that never finish their handshake are bounded per source address; a client whose
certificate is revoked while its link is open is refused at its next query; the gateway stays
up through a stalled request, JSON nested too deep and a refused query; a client refuses a
party's answer of the wrong shape."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from covault.cli import main as cli
from covault.deploy.config import load_config
from covault.errors import PeerError
from covault.serving import Client
from covault.serving.frontdoor import FrontDoor
from covault.serving.keys import store_folders
from covault.serving.store import model_file, read_header
from covault.serving.wire import QueryRefused, door_address
from covault.transport.accept import MAX_WAITING_PER_SOURCE
from covault.transport.tcp import open_listener
from covault.transport.tls import TlsIdentity
from tests.helpers import free_ports, gateway_token, post
from tests.test_serving_many import RNG, consortium, start, stop
from tests.test_serving_service import ERR, plain

pytestmark = pytest.mark.processes


def raw_post(url: str, body: bytes, token: str) -> tuple[int, dict]:
    """POST raw ``body`` bytes: ``(status, JSON answer)``."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_query_cap_silent_connections_gateway_and_revocation(tmp_path):
    config, serving = consortium(tmp_path, "2pc")
    procs = start(config, serving, "--max-query-rows", "8")
    port, token_file = free_ports(1)[0], tmp_path / "c2.token"
    gw = [sys.executable, "-m", "covault", "gateway", str(config), "--as", "c2", "--model", "risk"]
    gateway = subprocess.Popen(
        [*gw, "--port", str(port), "--token-file", str(token_file)], stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/predict"
    x = RNG.normal(0, 1, (8, 5))
    silent: list[socket.socket] = []
    try:
        with Client(config, as_="c1", model="risk") as c:
            # A query above the service's cap is refused to its client, naming the cap.
            with pytest.raises(
                QueryRefused, match=r"1 to 8 rows at this service \(--max-query-rows\), got 9"
            ):
                c.predict(RNG.normal(0, 1, (9, 5)))
            np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)
            # Connections from one source that never start their handshake: one too many is
            # closed at once; clients from elsewhere are served meanwhile.
            door = door_address(load_config(config), "a")
            for _ in range(MAX_WAITING_PER_SOURCE + 1):
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.connect(door)
                silent.append(s)
            silent[-1].settimeout(5)
            assert silent[-1].recv(1) == b""
            with Client(config, as_="c3", model="risk") as c3:
                np.testing.assert_allclose(c3.predict(x[:2]), plain(x[:2]), atol=ERR)
        # The gateway: a request stalled after its first line holds up no other; JSON nested too
        # deep and a refused query get 400.
        token = gateway_token(url, token_file)
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /predict HTTP/1.1\r\n")
        np.testing.assert_allclose(post(url, {"rows": x.tolist()}, token)["predictions"], plain(x), atol=ERR)
        code, answer = raw_post(url, b'{"rows": ' + b"[" * 100000 + b"]" * 100000 + b"}", token)
        assert code == 400 and "rows" in answer["error"], answer
        code, answer = raw_post(url, json.dumps({"rows": np.zeros((9, 5)).tolist()}).encode(), token)
        assert code == 400 and "--max-query-rows" in answer["error"] and answer["party"] in ("a", "b")
        stalled.close()
        # A client whose certificate is revoked while its link is open: its next query is refused.
        with Client(config, as_="c3", model="risk") as c3:
            np.testing.assert_allclose(c3.predict(x[:1]), plain(x[:1]), atol=ERR)
            assert cli(["certs", "revoke", str(tmp_path / "certs"), "c3"]) == 0
            with pytest.raises(
                QueryRefused, match=r"certificate of party 'c3' \(serial [0-9a-f]+\) is revoked"
            ):
                c3.predict(x[:1])
    finally:
        for s in silent:
            s.close()
        gateway.kill()
        gateway.wait()
        res = stop(procs)
    assert "closed a connection from 127.0.0.2" in res["a"][1]
    assert "client 'c3' refused: the certificate of party 'c3'" in res["a"][1]


def test_a_client_refuses_answers_of_another_shape(tmp_path):
    """Two real front doors whose parties answer a query with shares of different shapes (one
    row too many at b): the client raises PeerError naming b instead of broadcasting them."""
    config, _ = consortium(tmp_path, "2pc")
    cfg = load_config(config)
    folder, _ = store_folders(cfg)
    doors, stop_ = [], threading.Event()
    for p in ("a", "b"):
        header, _ = read_header(model_file(folder, "risk", p), p)
        public = {k: v for k, v in header.items() if k not in ("party", "components")}
        blob = json.dumps(public, sort_keys=True).encode()
        tls = TlsIdentity.from_dir(cfg.certs, p)
        listener = open_listener(*door_address(cfg, p))
        doors.append(FrontDoor(p, listener, tls, "risk", blob, cfg.data, 5, 1).start())

    def answer(door: FrontDoor, extra: int) -> None:
        while not stop_.is_set():
            for q in door.take(64, 0.1):
                door.answer(q, 16, np.zeros(q.rows + extra, np.int64))

    threads = [threading.Thread(target=answer, args=(d, e), daemon=True) for d, e in zip(doors, (0, 1))]
    for t in threads:
        t.start()
    try:
        with Client(config, as_="c1", model="risk") as c:
            with pytest.raises(
                PeerError, match=r"party 'b': answered query 1 .* shape \(3,\), expected \(2,\)"
            ):
                c.predict(np.zeros((2, 5)))
    finally:
        stop_.set()
        for d in doors:
            d.close()
