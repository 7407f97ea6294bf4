"""``covault serve --many``: one long-lived service of the compute parties (and the 2pc dealer)
for many clients at once, every party its own process over mutual TLS on loopback. Each client
gets its own answers (the plaintext model's); a malformed, vanishing or stalled client fails
only its own query; a killed compute party fails the pending queries naming it, and the service
comes back when it restarts; no serving party's messages hold a query row or an answer."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error

import numpy as np
import pytest

import covault
from covault.cli import main as cli
from covault.deploy.config import load_config
from covault.errors import PeerError
from covault.serving import Client
from covault.serving.formats import PlainModel
from covault.serving.importer import import_model
from covault.serving.keys import store_folders
from covault.serving.wire import (
    ANSWER,
    BYE,
    ERROR,
    MAGIC,
    QUERY,
    REFUSED,
    Link,
    Refused,
    door_address,
    op_of,
    text,
    untext,
)
from covault.transport.handshake import prepare_socket
from covault.transport.tls import TlsIdentity
from tests.helpers import door_ports, free_ports, gateway_token, post, wait_parties
from tests.test_serving_service import B1, B2, ERR, LAYERS, W1, W2, plain
from tests.transcripts import check_transcripts

pytestmark = pytest.mark.processes

CLIENTS = ("c1", "c2", "c3")
RNG = np.random.default_rng(41)


def consortium(folder, protocol: str, timeout: int = 20):
    """A consortium (compute parties, the 2pc dealer, the model's owner and three clients) whose
    compute parties hold the secret model ``risk``, imported from the owner; ``(path, serving)``."""
    compute = ["a", "b"] if protocol == "2pc" else ["a", "b", "c"]
    serving = [*compute, "dealer"] if protocol == "2pc" else compute
    names = [*serving, "owner", *CLIENTS]
    certs = folder / "certs"
    assert cli(["certs", "init", str(certs), "--days", "2"]) == 0
    top = [f'protocol = "{protocol}"', f"timeout = {timeout}", f"compute = {json.dumps(compute)}"]
    top += ['dealer = "dealer"'] if protocol == "2pc" else []
    lines = [*top, "[tls]", 'certs = "certs"']
    for n, port in zip(names, door_ports(len(names))):
        assert cli(["certs", "issue", str(certs), n, "--days", "2"]) == 0
        lines += [f"[parties.{n}]", f'address = "127.0.0.1:{port}"']
    path = folder / "consortium.toml"
    path.write_text("\n".join(lines) + "\n")
    folder_, keys = store_folders(load_config(path))
    model = PlainModel(LAYERS, [W1, B1, W2, B2])
    covault.run(
        lambda s: import_model(s, "owner", model if s.party == "owner" else None, folder_, keys, name="risk"),
        compute,
        protocol,
        data_parties=["owner"],
    )
    return path, serving


def start(config, names, *extra):
    cmd = [sys.executable, "-m", "covault", "serve", str(config), "--model", "risk", "--many", "--json"]
    return {
        n: subprocess.Popen(
            [*cmd, "--as", n, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in names
    }


def stop(procs):
    """SIGTERM every serving party: each ends cleanly (exit 0) with its JSON line."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    out = wait_parties(procs, 60)
    for n, (_, err, code) in out.items():
        assert code == 0, (n, err)
    return {n: (json.loads(o.splitlines()[-1]), e) for n, (o, e, _) in out.items()}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return consortium(tmp_path_factory.mktemp("many2pc"), "2pc")


def ask(config, client, sizes, out, errors, transcript_dir=None):
    """``client`` queries rows of ``sizes`` rows each; its answers and rows in ``out[client]``."""
    try:
        rng = np.random.default_rng(int(client[1:]))
        with Client(config, as_=client, model="risk", transcript_dir=transcript_dir) as c:
            for n in sizes:
                x = rng.normal(0, 1, (n, 5))
                out.setdefault(client, []).append((x, c.predict(x)))
    except BaseException as exc:
        errors.append((client, exc))


def run_all(threads: list[threading.Thread], timeout: float = 120) -> None:
    """Start ``threads`` and wait for each (at most ``timeout`` seconds apiece)."""
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


def raw_link(config, party: str, client: str) -> Link:
    """A front-door link of ``client`` to ``party``, its hello answered (as the Client opens it)."""
    cfg = load_config(config)
    for _ in range(400):  # until the service is up
        try:
            sock = socket.create_connection(door_address(cfg, party), timeout=10)
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    link = Link(prepare_socket(sock, TlsIdentity.from_dir(cfg.certs, client), server_side=False))
    link.send([text(MAGIC), text(client), text("risk"), text(b"12345678")])
    assert link.recv()[0].tobytes() == MAGIC
    return link


def test_three_clients_at_once_each_get_their_own_answers_and_bad_clients_disturb_no_one(two):
    config, serving = two
    procs = start(config, serving)
    out, errors = {}, []
    try:
        threads = [
            threading.Thread(target=ask, args=(config, c, sizes, out, errors))
            for c, sizes in zip(CLIENTS, ([1] * 12, [3, 1, 16, 2] * 3, [1, 7] * 6))
        ]
        for t in threads:
            t.start()
        # Meanwhile: c3 also sends malformed shares to a (refused to it alone), a query whose
        # shares reach a only and one of other row counts at a and b (each fails naming b, for
        # c3 alone), a garbage frame to b (dropped), and vanishes in the middle of a frame.
        bad = raw_link(config, "a", "c3")
        bad.send([np.array([QUERY, 1], np.int64), np.zeros((1, 2, 4), np.int64)])
        op = op_of(reply := bad.recv())
        assert op[0] == ERROR and op[2] == REFUSED and "shape (1, n, 5)" in untext(reply[2])
        bad.send([np.array([QUERY, 2], np.int64), np.zeros((1, 1, 5), np.int64)])
        op = op_of(reply := bad.recv())
        assert op[0] == ERROR and untext(reply[1]) == "b" and "party 'b' did not hold" in untext(reply[2])
        other = raw_link(config, "b", "c3")  # query 3: 2 rows to a, 1 row to b
        bad.send([np.array([QUERY, 3], np.int64), np.zeros((1, 2, 5), np.int64)])
        other.send([np.array([QUERY, 3], np.int64), np.zeros((1, 1, 5), np.int64)])
        op = op_of(reply := bad.recv())
        assert op[0] == ERROR and op[1] == 3 and untext(reply[1]) == "b"
        garbage = raw_link(config, "b", "c3")
        garbage.channel.send_buffers([b"CVLT" + bytes(40)])
        half = raw_link(config, "b", "c3")
        half.channel.send_buffers([b"CVLT"])
        half.close()
        bad.send([np.array([BYE, 0], np.int64)])
        bad.close()
        for t in threads:
            t.join(120)
        with Client(config, as_="c1", model="risk") as c:  # the service goes on
            x = RNG.normal(0, 1, (2, 5))
            np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)
    finally:
        res = stop(procs)
    assert not errors, errors
    assert sorted(out) == list(CLIENTS)
    for client, answers in out.items():
        assert len(answers) == 12
        for x, y in answers:
            np.testing.assert_allclose(y, plain(x), atol=ERR, err_msg=client)
    assert {r["queries"] for r, _ in res.values()} == {37}  # 36 + 1; the failed one is not counted
    log_b = res["b"][1]
    assert "client 'c3' sent a malformed frame" in log_b, log_b
    assert "query 3 of client 'c3': it sent this party 1 rows and party 'a' 2" in log_b, log_b
    assert "client 'c3'" in res["a"][1] and "refused" in res["a"][1]


def test_a_client_stalled_in_the_middle_of_a_frame_is_dropped_alone(tmp_path):
    """A client that starts a frame and stops sending is dropped after the config's timeout
    (a log line naming it); another client is answered meanwhile and after. A certificate that
    names no data party (here the dealer's) is refused at the front door."""
    config, serving = consortium(tmp_path, "2pc", timeout=3)
    procs = start(config, serving)
    try:
        with pytest.raises(Refused, match=r"party 'dealer' may not query this service"):
            raw_link(config, "a", "dealer")
        stalled = raw_link(config, "b", "c2")
        stalled.channel.send_buffers([b"CVLT\x02"])  # a frame's first bytes, then nothing
        with Client(config, as_="c1", model="risk") as c:
            x = RNG.normal(0, 1, (3, 5))
            np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)
            stalled.channel.settimeout(15)
            with pytest.raises(EOFError):
                stalled.recv()  # b hangs up on it
            np.testing.assert_allclose(c.predict(x[:1]), plain(x[:1]), atol=ERR)
        stalled.close()
    finally:
        res = stop(procs)
    assert "client 'c2' stalled in the middle of a frame for 3 s: dropped" in res["b"][1]


@pytest.mark.parametrize("victim", ["b", "dealer"])
def test_a_killed_serving_party_fails_pending_queries_and_the_service_comes_back(two, victim):
    """A compute party or the dealer killed while a client's queries run: the query in progress
    fails naming it; started again, it rejoins the others (which kept their front doors open),
    and the client's next query connects again and is answered."""
    config, serving = two
    procs = start(config, serving, "--rejoin", "60")
    big = RNG.normal(0, 1, (2000, 5))
    try:
        with Client(config, as_="c1", model="risk") as c:
            np.testing.assert_allclose(c.predict(big[:3]), plain(big[:3]), atol=ERR)
            failed = []

            def busy():
                try:
                    while True:
                        c.predict(big)
                except PeerError as exc:
                    failed.append(exc)

            t = threading.Thread(target=busy)
            t.start()
            time.sleep(0.5)
            procs[victim].kill()
            procs[victim].wait()
            t.join(60)
            assert failed and failed[0].party == victim, failed
            procs[victim] = start(config, [victim], "--rejoin", "60")[victim]
            x = RNG.normal(0, 1, (4, 5))
            np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)  # it connects again
    finally:
        res = stop(procs)
    assert f"serving party {victim!r} stopped" in res["a"][1]
    assert res[victim][0]["queries"] >= 1
    # a's count spans its sessions: the query before the kill and the one after at least
    assert res["a"][0]["queries"] >= 2


def test_shares_that_reach_one_party_only_delay_no_one_else(two):
    """c3's query 1 reaches a only, though c3's link to b is open: the others' queries go on
    (the leader announces it again while it waits), so c1's are answered before it fails, naming
    b, once the share wait (10 s) has passed; c3's query 2, whose shares reach b only after its
    first announcement, is answered."""
    config, serving = two
    procs = start(config, serving, "--share-wait", "10")
    try:
        to_a, to_b = raw_link(config, "a", "c3"), raw_link(config, "b", "c3")
        zero = np.zeros((1, 1, 5), np.int64)
        to_a.send([np.array([QUERY, 1], np.int64), zero])
        with Client(config, as_="c1", model="risk") as c:
            for _ in range(3):
                x = RNG.normal(0, 1, (2, 5))
                np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)
        to_a.channel.settimeout(0.05)
        with pytest.raises(TimeoutError):  # query 1 has not failed yet: nobody waited for it
            to_a.recv()
        to_a.send([np.array([QUERY, 2], np.int64), zero])
        time.sleep(0.3)  # query 2 is announced and b lacks it: announced again
        to_b.send([np.array([QUERY, 2], np.int64), zero])
        replies: dict = {}
        for name, link in (("a", to_a), ("b", to_b)):
            link.channel.settimeout(60)
            while (name, 2) not in replies or (name == "a" and (name, 1) not in replies):
                reply = link.recv()
                replies[name, int(op_of(reply)[1])] = reply
        (a2, b2), a1 = (replies["a", 2], replies["b", 2]), replies["a", 1]
        assert op_of(a2)[0] == ANSWER and op_of(b2)[0] == ANSWER
        y = (a2[1] + b2[1]).astype(np.float64) / 2.0 ** int(op_of(a2)[2])
        np.testing.assert_allclose(y, plain(np.zeros((1, 5))), atol=ERR)
        assert op_of(a1)[0] == ERROR and untext(a1[1]) == "b" and "none came within 10 s" in untext(a1[2])
        for link in (to_a, to_b):
            link.send([np.array([BYE, 0], np.int64)])
            link.close()
    finally:
        stop(procs)


def test_a_party_stopped_on_purpose_is_named_as_stopped(two):
    """SIGTERM at a non-leader (b): it leaves with exit 0 and tells the others why, so the
    leader's log reads as a stop by its operator, not as a lost connection; started again, it
    rejoins and the service answers."""
    config, serving = two
    procs = start(config, serving, "--rejoin", "60")
    try:
        with Client(config, as_="c1", model="risk") as c:
            x = RNG.normal(0, 1, (2, 5))
            np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)
        procs["b"].send_signal(signal.SIGTERM)
        _, err, code = wait_parties({"b": procs["b"]}, 60)["b"]
        assert code == 0, err
        procs["b"] = start(config, ["b"], "--rejoin", "60")["b"]
        with Client(config, as_="c1", model="risk") as c:
            np.testing.assert_allclose(c.predict(x), plain(x), atol=ERR)
    finally:
        res = stop(procs)
    assert "party 'b' was stopped by its operator (SIGTERM or Ctrl-C)" in res["a"][1]


def test_the_gateway_stays_up_through_a_restarted_compute_party(two, tmp_path):
    """``covault gateway`` as c2: 502 naming the killed party, then answers again once it is back."""
    config, serving = two
    procs = start(config, serving, "--rejoin", "60")
    port, token_file = free_ports(1)[0], tmp_path / "c2.token"
    gw = [sys.executable, "-m", "covault", "gateway", str(config), "--as", "c2", "--model", "risk"]
    gateway = subprocess.Popen(
        [*gw, "--port", str(port), "--token-file", str(token_file)], stderr=subprocess.PIPE, text=True
    )
    x = RNG.normal(0, 1, (2, 5))
    url = f"http://127.0.0.1:{port}/predict"
    try:
        token = gateway_token(url, token_file)
        np.testing.assert_allclose(post(url, {"rows": x.tolist()}, token)["predictions"], plain(x), atol=ERR)
        procs["b"].kill()
        procs["b"].wait()
        with pytest.raises(urllib.error.HTTPError) as failed:
            post(url, {"rows": x.tolist()}, token)
        assert failed.value.code == 502 and json.loads(failed.value.read())["party"] == "b"
        procs["b"] = start(config, ["b"], "--rejoin", "60")["b"]
        again = post(url, {"rows": x.tolist()}, token)  # the gateway connects again
        np.testing.assert_allclose(again["predictions"], plain(x), atol=ERR)
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=30) == 0, gateway.stderr.read()
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        stop(procs)


def test_no_serving_party_sees_a_query_row_or_an_answer(tmp_path):
    """rep3: every message of every compute party (to each other and to the clients) and every
    message of the clients to them, read from the transcripts: no array's bytes hold a query row
    or an answer (float64, fixed point at 16 or 32 fractional bits, narrowed words), no party sends
    the same words twice, and the words a compute party receives pass a bit-frequency test."""
    config, serving = consortium(tmp_path, "rep3")
    words = tmp_path / "transcripts"
    procs = start(config, serving, "--transcript", str(words))
    out, errors = {}, []
    try:
        run_all(
            [threading.Thread(target=ask, args=(config, c, [1, 2], out, errors, words)) for c in CLIENTS[:2]]
        )
    finally:
        stop(procs)
    assert not errors, errors
    values = []
    for answers in out.values():
        for x, y in answers:
            np.testing.assert_allclose(y, plain(x), atol=ERR)
            values += [x.ravel(), y.ravel()]
    assert {p.name for p in words.glob("*.transcript")} == {
        f"{n}.transcript" for n in [*serving, *CLIENTS[:2]]
    }
    assert check_transcripts(words, np.concatenate(values), serving, CLIENTS[:2]) > 10_000


def test_one_client_shared_by_threads_answers_each_its_own_rows(two):
    """Several threads predict through one Client: their queries go one at a time, and each
    thread gets the plaintext model's answer for its own rows."""
    config, serving = two
    procs = start(config, serving)
    got, errors = [], []
    try:
        with Client(config, as_="c1", model="risk") as c:

            def work(seed: int) -> None:
                rng = np.random.default_rng(seed)
                try:
                    for n in (1, 3, 2, 1, 4):
                        x = rng.normal(0, 1, (n, 5))
                        got.append((x, c.predict(x)))
                except BaseException as exc:
                    errors.append(exc)

            run_all([threading.Thread(target=work, args=(s,)) for s in range(3)])
    finally:
        stop(procs)
    assert not errors, errors
    assert len(got) == 15
    for x, y in got:
        np.testing.assert_allclose(y, plain(x), atol=ERR)
