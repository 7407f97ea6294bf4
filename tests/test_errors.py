"""Bad input raises a clear error, before any message is sent, and no party hangs."""

from __future__ import annotations

import time

import numpy as np
import pytest

import covault
from covault.encoding import FixedPoint
from covault.errors import EncodingError, PartyError, ProtocolError, ShapeError


def run_recording(program, proto):
    """Run ``program``; return the messages each party sent after setup, and the error."""
    name, n = proto
    sent: dict[str, list] = {}

    def wrapped(s):
        s.net.add_recorder(
            lambda d, peer, msg: sent.setdefault(s.party, []).append(peer) if d == "sent" else None
        )
        return program(s)

    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        covault.run(wrapped, n, name, timeout=20)
    assert time.monotonic() - t0 < 10, "a failing party must not leave the others hanging"
    return sent, info.value


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.array([1.0, np.nan]), "NaN"),
        (np.array([np.inf]), "infinite"),
        (np.array([1e9]), "outside the fixed-point range"),
        (np.array(["a", "b"]), "numeric"),
    ],
)
def test_bad_values_rejected_before_sending(proto, bad, fragment):
    def prog(s):
        return s.input(bad if s.party == "p0" else None, owner="p0")

    sent, err = run_recording(prog, proto)
    assert isinstance(err, EncodingError)
    assert fragment in str(err)
    assert "p0" in str(err)
    assert not sent.get("p0"), "the owner sent something before rejecting its input"


def test_range_message_names_the_bound():
    with pytest.raises(EncodingError, match=r"\|x\| < 32768"):
        FixedPoint(16).encode([40000.0])
    with pytest.raises(EncodingError, match=r"\|x\| < 8.38861e\+06"):
        FixedPoint(8).encode([1e7])


def test_unknown_owner_and_receiver(proto):
    def prog_owner(s):
        return s.input(None, owner="mallory")

    sent, err = run_recording(prog_owner, proto)
    assert isinstance(err, PartyError) and "mallory" in str(err)
    assert not any(sent.values())

    def prog_reveal(s):
        x = s.input(np.ones(3) if s.party == "p0" else None, owner="p0")
        s.net.add_recorder(
            lambda d, peer, msg: (_ for _ in ()).throw(RuntimeError("sent")) if d == "sent" else None
        )
        return x.reveal(to="eve")

    with pytest.raises(PartyError, match="eve"):
        covault.run(prog_reveal, proto[1], proto[0], timeout=20)


def test_shape_mismatch(proto):
    def prog(s):
        x = s.input(np.ones((2, 3)) if s.party == "p0" else None, owner="p0")
        y = s.input(np.ones((4, 5)) if s.party == "p1" else None, owner="p1")
        before = s.stats.messages_sent
        try:
            x @ y
        except ShapeError as e:
            msg = str(e)
        try:
            x * y
        except ShapeError as e:
            msg2 = str(e)
        return msg, msg2, s.stats.messages_sent - before

    name, n = proto
    res = covault.run(prog, n, name)
    for msg, msg2, sent in res.values():
        assert "(2, 3) @ (4, 5)" in msg
        assert "(2, 3) and (4, 5)" in msg2
        assert sent == 0


def test_value_at_non_owner_is_an_error(proto):
    def prog(s):
        return s.input(np.ones(2), owner="p0")

    name, n = proto
    with pytest.raises(ProtocolError, match="only the owner"):
        covault.run(prog, n, name, timeout=20)


def test_bad_run_arguments():
    with pytest.raises(ProtocolError, match="unknown protocol"):
        covault.run(lambda s: None, 3, "spdz")
    with pytest.raises(PartyError, match="needs 3"):
        covault.run(lambda s: None, 2, "rep3")
    with pytest.raises(PartyError, match="duplicate"):
        covault.run(lambda s: None, ["a", "a"], "2pc")
    with pytest.raises(PartyError, match="reserved"):
        covault.run(lambda s: None, ["a", "dealer"], "2pc")
    with pytest.raises(covault.CovaultError, match="unknown transport"):
        covault.run(lambda s: None, 2, "2pc", transport="pigeon")


def test_party_failure_reaches_everyone_fast(proto):
    def prog(s):
        x = s.input(np.ones(3) if s.party == "p0" else None, owner="p0")
        if s.party == "p1":
            raise RuntimeError("disk on fire")
        return (x * x).reveal()

    name, n = proto
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="disk on fire") as info:
        covault.run(prog, n, name, timeout=20)
    assert time.monotonic() - t0 < 5
    assert any("p1" in note for note in info.value.__notes__)


def test_stalled_peer_times_out_with_its_name():
    def prog(s):
        if s.party == "p2":
            time.sleep(3)
            return None
        x = s.input(np.ones(2) if s.party == "p2" else None, owner="p2")
        return x

    t0 = time.monotonic()
    with pytest.raises(covault.PeerError, match="p2") as info:
        covault.run(prog, 3, "rep3", timeout=1.0)
    assert "no message within 1 s" in str(info.value) or "stopped" in str(info.value)
    assert time.monotonic() - t0 < 6
