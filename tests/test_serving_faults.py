"""``covault serve --many`` against misbehaving clients and parties: every party its own process
over mutual TLS on loopback. A query above ``--max-query-rows`` is refused to its client alone;
connections that never finish their handshake are bounded per source address; a client whose
certificate is revoked while its link is open is refused at its next query; the gateway stays
up through a stalled request, JSON nested too deep and a refused query; a client refuses a
party's answer of the wrong shape; a front door bounds the queries and refused ids one client
leaves behind; an error inside a batch fails that batch alone; the welcome is the header
``load_model`` authenticated."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import covault
from covault.cli import main as cli
from covault.deploy.config import load_config
from covault.errors import PeerError
from covault.serving import Client, frontdoor
from covault.serving.frontdoor import FrontDoor
from covault.serving.keys import store_folders
from covault.serving.model import SecretModel, load_model
from covault.serving.service import serve_party
from covault.serving.store import model_file, read_header
from covault.serving.wire import BYE, QUERY, QueryRefused, door_address, untext
from covault.transport.accept import MAX_WAITING_PER_SOURCE
from covault.transport.tcp import open_listener
from covault.transport.tls import TlsIdentity
from tests.helpers import free_ports, gateway_token, post
from tests.test_serving_many import RNG, consortium, raw_link, start, stop
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
            # Far above it (a frame the door would cut off as too large): the client refuses it
            # from the cap in the door's welcome, before sending, and its links stay open.
            with pytest.raises(QueryRefused, match=r"1 to 8 rows at this service.*got 5000") as refused:
                c.predict(RNG.normal(0, 1, (5000, 5)))
            assert refused.value.party in ("a", "b") and c._broken is None
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


def open_door(config, party: str) -> FrontDoor:
    """Compute party ``party``'s front door alone (no service behind it), started."""
    cfg = load_config(config)
    folder, _ = store_folders(cfg)
    header, _ = read_header(model_file(folder, "risk", party), party)
    public = {k: v for k, v in header.items() if k not in ("party", "components")}
    blob = json.dumps(public, sort_keys=True).encode()
    tls = TlsIdentity.from_dir(cfg.certs, party)
    listener = open_listener(*door_address(cfg, party))
    return FrontDoor(party, listener, tls, "risk", blob, cfg.data, 5, 1).start()


def test_a_front_door_bounds_what_one_client_leaves_behind(tmp_path, monkeypatch):
    """A front door with no batch taking its queries: a client's queries beyond HELD_QUERIES are
    refused to it, refused query ids are remembered up to MAX_REFUSED (here 3), and the shares of
    a client that disconnects are dropped."""
    monkeypatch.setattr(frontdoor, "MAX_REFUSED", 3)
    config, _ = consortium(tmp_path, "2pc")
    door = open_door(config, "b")
    try:
        link = raw_link(config, "b", "c1")
        for qid in range(1, frontdoor.HELD_QUERIES + 2):
            link.send([np.array([QUERY, qid], np.int64), np.zeros((1, 1, 5), np.int64)])
        for qid in range(-5, 0):
            link.send([np.array([QUERY, qid], np.int64), np.zeros((1, 1, 5), np.int64)])
        why = [untext(link.recv()[2]) for _ in range(6)]
        assert why[0] == f"client 'c1' has {frontdoor.HELD_QUERIES} queries waiting here already", why
        assert all("query ids are positive" in w for w in why[1:]) and len(door._refused) == 3
        token = int(np.frombuffer(b"12345678", np.int64)[0])
        keys = [("c1", token, q) for q in range(1, frontdoor.HELD_QUERIES + 1)]
        link.send([np.array([BYE, 0], np.int64)])
        link.close()
        for _ in range(400):  # until the door has seen the link close
            if not door.connected("c1", token):
                break
            time.sleep(0.025)
        assert door.collect(keys, 0) == [None] * len(keys)  # dropped when the link closed
    finally:
        door.close()


def test_queries_taken_into_a_batch_are_no_longer_held(tmp_path, monkeypatch):
    """The leader's front door: a query taken into a batch leaves the store, so one client's
    queries one after another never reach HELD_QUERIES (here 2) however many it sends."""
    monkeypatch.setattr(frontdoor, "HELD_QUERIES", 2)
    config, _ = consortium(tmp_path, "2pc")
    door = open_door(config, "a")
    try:
        link = raw_link(config, "a", "c1")
        for qid in range(1, 6):
            link.send([np.array([QUERY, qid], np.int64), np.zeros((1, 1, 5), np.int64)])
            taken = []
            for _ in range(100):
                taken = door.take(64, 0.05)
                if taken:
                    break
            assert [p.qid for p in taken] == [qid]
            assert door.collect([taken[0].key], 0) == [None]  # not held any more
        link.close()
    finally:
        door.close()


def test_shares_the_leader_passed_over_are_dropped(tmp_path):
    """A non-leader's front door: when the leader announces a client's later query, the shares of
    that link's earlier queries that the leader never announced (it refused them) leave the
    store at once, not after STALE seconds; a query that came after the announced one stays."""
    config, _ = consortium(tmp_path, "2pc")
    door = open_door(config, "b")
    try:
        link = raw_link(config, "b", "c1")
        for qid in (7, 8, 9):
            link.send([np.array([QUERY, qid], np.int64), np.zeros((1, 1, 5), np.int64)])
        held: list = []
        for _ in range(400):  # until the three queries are held
            with door._cond:
                held = list(door._store)
            if len(held) == 3:
                break
            time.sleep(0.025)
        assert [k[2] for k in held] == [7, 8, 9]
        client, token = held[0][:2]
        got = door.collect([(client, token, 8)], 5.0)
        assert [p.qid for p in got] == [8]
        with door._cond:
            assert list(door._store) == [(client, token, 9)]  # 7 dropped, 9 kept
        assert [p.qid for p in door.collect([(client, token, 9)], 0)] == [9]
        link.close()
    finally:
        door.close()


def test_no_wait_for_the_shares_of_a_closed_link(tmp_path):
    """A non-leader's front door does not wait for the shares of a client whose link to it has
    closed (they can never come): the batch goes on without them instead of holding every other
    client's queries for the whole share wait."""
    config, _ = consortium(tmp_path, "2pc")
    door = open_door(config, "b")
    try:
        link = raw_link(config, "b", "c1")
        token = int(np.frombuffer(b"12345678", np.int64)[0])
        link.close()
        for _ in range(400):  # until the door has seen the link close
            if not door.connected("c1", token):
                break
            time.sleep(0.025)
        got: list = []
        t = threading.Thread(target=lambda: got.append(door.collect([("c1", token, 1)], 600.0)), daemon=True)
        t.start()
        t.join(60)  # a liveness bound, far below the 600 s it would wait for a live link
        assert got == [[None]]
    finally:
        door.close()


def test_a_closed_front_door_stops_accepting(tmp_path):
    """close() wakes the thread blocked in accept (closing the listener alone does not on
    Linux): no connection is taken into a door that no batch loop answers any more."""
    config, _ = consortium(tmp_path, "2pc")
    door = open_door(config, "b")
    door.close()
    door._thread.join(30)
    assert not door._thread.is_alive()


def test_a_client_refuses_answers_of_another_shape(tmp_path):
    """Two real front doors whose parties answer a two-row query with shares of different shapes
    (one row at b): the client raises PeerError naming b instead of broadcasting them."""
    config, _ = consortium(tmp_path, "2pc")
    doors, stop_ = [open_door(config, p) for p in ("a", "b")], threading.Event()

    def answer(door: FrontDoor, rows: int | None) -> None:
        while not stop_.is_set():
            for q in door.take(64, 0.1):
                door.answer(q, 16, np.zeros(rows or q.rows, np.int64))

    threads = [threading.Thread(target=answer, args=(d, r), daemon=True) for d, r in zip(doors, (None, 1))]
    for t in threads:
        t.start()
    try:
        with Client(config, as_="c1", model="risk") as c:
            with pytest.raises(
                PeerError, match=r"party 'b': answered query 1 .* shape \(1,\), expected \(2,\)"
            ):
                c.predict(np.zeros((2, 5)))
    finally:
        stop_.set()
        for d in doors:
            d.close()


def test_an_error_inside_a_batch_fails_that_batch_alone_and_the_service_goes_on(tmp_path, monkeypatch):
    """Every serving party in its own thread; party a's evaluation of the first batch raises
    MemoryError (a fault injected in ``SecretModel.forward``): that query fails at its client
    naming a, the parties open their session again, and the next query is answered."""
    config, serving = consortium(tmp_path, "2pc")
    cfg = load_config(config)
    real, failed = SecretModel.forward, []

    def forward(self, x, **kw):
        if x.session.party == "a" and not failed:
            failed.append(x.shape)
            raise MemoryError("no room for the batch")
        return real(self, x, **kw)

    monkeypatch.setattr(SecretModel, "forward", forward)
    done, out, errors = threading.Event(), {}, []

    def serve(name: str) -> None:
        try:
            out[name] = serve_party(cfg, name, "risk", many=True, rejoin=30, stop=done.is_set)
        except BaseException as exc:
            errors.append((name, exc))

    threads = [threading.Thread(target=serve, args=(n,), daemon=True) for n in serving]
    for t in threads:
        t.start()
    try:
        x = RNG.normal(0, 1, (3, 5))
        with Client(config, as_="c1", model="risk") as c:
            with pytest.raises(PeerError, match=r"party 'a': .*MemoryError: no room for the batch"):
                c.predict(x)
            np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert failed and out["a"]["queries"] == 1


def test_the_welcome_header_is_the_one_load_model_authenticated(tmp_path):
    """``load_model`` returns the public header it authenticated (the service's welcome is built
    from it, not from a second read of the file): the stored header without party and components."""
    config, _ = consortium(tmp_path, "2pc")
    folder, keys = store_folders(load_config(config))
    got = covault.run(lambda s: load_model(s, folder, "risk", key_dir=keys).header, ["a", "b"], "2pc")
    header, _ = read_header(model_file(folder, "risk", "a"), "a")
    public = {k: v for k, v in header.items() if k not in ("party", "components")}
    assert got["a"] == got["b"] == public


def test_a_number_too_large_for_float64_is_a_shape_error_naming_the_client():
    """An integer beyond float64 (JSON allows it) is refused like any non-number, not an
    OverflowError traceback."""
    from covault.encoding import FixedPoint
    from covault.errors import ShapeError
    from covault.serving.service import check_rows

    class M:
        name, n_features = "m", 3

    with pytest.raises(ShapeError, match=r"client 'c1'.*rows must be numbers"):
        check_rows(FixedPoint(16), M(), [[1, 2, 10**400]], "c1")
