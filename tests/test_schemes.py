"""Protocols and correlation providers by name: one registry each (covault.schemes,
covault.randomness.providers); unknown names are refused naming the value and the choices, and
the chosen provider reaches every session."""

from __future__ import annotations

import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pytest

import covault
from covault import schemes
from covault.deploy import certs
from covault.deploy.config import ConfigError, parse_config
from covault.errors import ProtocolError
from covault.jobs import JobError
from covault.jobs.spec import parse_job
from covault.launch.consortium import generated_config
from covault.protocols.base import Protocol
from covault.randomness.providers import PROVIDERS, Provider, choose, dealer_protocols, needs_dealer
from covault.randomness.providers.base import CorrelationProvider
from covault.randomness.providers.dealer import DealerProvider
from covault.runtime import party_names, run_party
from tests.helpers import free_ports


def test_every_scheme_and_provider_loads_and_is_consistent():
    assert schemes.names() == ("rep3", "2pc") and schemes.DEFAULT in schemes.SCHEMES
    for name, scheme in schemes.SCHEMES.items():
        cls = scheme.load()
        assert issubclass(cls, Protocol) and cls.name == name == scheme.name
        assert scheme.description and 1 <= scheme.components <= scheme.parties
        assert all(p in PROVIDERS for p in scheme.providers)
    for name, entry in PROVIDERS.items():
        assert entry.name == name and entry.description
        assert issubclass(entry.load(), CorrelationProvider)
    assert schemes.get("2pc").parties == 2 and schemes.get("rep3").parties == 3
    assert dealer_protocols() == ("2pc",)
    assert needs_dealer("2pc") and needs_dealer("2pc", "dealer") and not needs_dealer("rep3")
    with pytest.raises(TypeError):
        schemes.SCHEMES["spdz"] = schemes.SCHEMES["2pc"]  # type: ignore[index]


@pytest.mark.parametrize(
    "protocol, provider, message",
    [
        ("spdz", None, r"unknown protocol 'spdz'; choose one of \['2pc', 'rep3'\]"),
        (["2pc"], None, r"unknown protocol \['2pc'\]; choose one of"),
        (
            "2pc",
            "he",
            r"unknown correlation provider 'he' for protocol '2pc'; choose one of \['dealer', 'ot'\]",
        ),
        ("2pc", 7, r"unknown correlation provider 7 for protocol '2pc'; choose one of \['dealer', 'ot'\]"),
        ("rep3", "dealer", r"protocol 'rep3' takes no correlation provider \(got provider='dealer'\)"),
    ],
)
def test_unknown_names_are_refused_naming_the_value_and_the_choices(protocol, provider, message):
    with pytest.raises(ProtocolError, match=message):
        choose(protocol, provider)
    with pytest.raises(ProtocolError, match=message):
        covault.run(lambda s: None, 2, protocol, provider=provider)


def test_the_dealer_party_follows_the_provider():
    assert party_names(2, "2pc") == (("p0", "p1"), "dealer")
    assert party_names(2, "2pc", "dealer") == (("p0", "p1"), "dealer")
    assert party_names(3, "rep3") == (("p0", "p1", "p2"), None)


def provider_view(s):
    """What a party sees of its correlation provider (module level: runs in party processes)."""
    x = s.input(
        np.array([1.5, -2.0]) if s.party == s.compute_parties[0] else None, owner=s.compute_parties[0]
    )
    return s.provider_name, type(getattr(s.protocol, "provider", None)).__name__, (x * x).reveal()


@pytest.mark.parametrize("transport", ["local", pytest.param("tcp", marks=pytest.mark.processes)])
def test_the_chosen_provider_reaches_every_session(transport):
    for provider in (None, "dealer"):
        res = covault.run(provider_view, 2, "2pc", transport, provider=provider, data_parties=["bank"])
        assert sorted(res) == ["bank", "dealer", "p0", "p1"]
        for party, (name, cls, product) in res.items():
            assert name == "dealer"
            assert cls == ("NoneType" if party == "bank" else "DealerProvider")
            if party in ("p0", "p1"):
                np.testing.assert_allclose(product, [2.25, 4.0], atol=1e-3)
    res = covault.run(provider_view, 3, "rep3", transport)
    assert {name for name, _, _ in res.values()} == {None}


def test_session_repr_names_the_provider():
    res = covault.run(lambda s: repr(s), 2, "2pc")
    assert "provider='dealer'" in res["p0"]
    assert "provider" not in covault.run(lambda s: repr(s), 3, "rep3")["p0"]


# -- consortium configs and job files ----------------------------------------------------------------
TWO = {"protocol": "2pc", "dealer": "d", "parties": {"a": {}, "b": {}, "d": {}}}


def test_config_provider_key():
    assert parse_config(TWO).provider == "dealer"
    assert parse_config({**TWO, "provider": "dealer"}).provider == "dealer"
    assert parse_config({"parties": {"a": {}, "b": {}, "c": {}}}).provider is None
    for provider, message in [
        (
            "he",
            r"provider: unknown correlation provider 'he' for protocol '2pc'; choose one of \['dealer', 'ot'\]",
        ),
        (["dealer"], r"provider: unknown correlation provider \['dealer'\]"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config({**TWO, "provider": provider})
    two_only = {"protocol": "2pc", "provider": "ot", "parties": {"a": {}, "b": {}}}
    assert parse_config(two_only).provider == "ot" and parse_config(two_only).dealer is None
    rep3 = {"protocol": "rep3", "provider": "dealer", "parties": {"a": {}, "b": {}, "c": {}}}
    with pytest.raises(ConfigError, match=r"provider: protocol 'rep3' takes no correlation provider"):
        parse_config(rep3)
    with pytest.raises(ConfigError, match=r"protocol must be one of \['rep3', '2pc'\], got 'spdz'"):
        parse_config({**TWO, "protocol": "spdz"})
    with pytest.raises(ConfigError, match=r"protocol '2pc' with provider 'dealer' needs dealer = 'NAME'"):
        parse_config({k: v for k, v in TWO.items() if k != "dealer"})


def test_generated_config_keeps_the_provider():
    cfg = parse_config({**TWO, "provider": "dealer"})
    text = generated_config(cfg, {"a": 1, "b": 2, "d": 3}, None)
    assert 'provider = "dealer"' in text
    assert parse_config(tomllib.loads(text)).provider == "dealer"
    rep3 = parse_config({"parties": {"a": {}, "b": {}, "c": {}}})
    assert "provider" not in generated_config(rep3, {"a": 1, "b": 2, "c": 3}, None)


def _job(**top):
    raw = {"protocol": "2pc", "task": "logistic_regression", "label": "y", **top}
    raw["parties"] = {"a": {"data": "a.csv"}, "b": {"data": "b.csv"}}
    return raw


def test_job_provider_key():
    job = parse_job(_job())
    assert job.provider == "dealer" and job.dealer == "dealer"
    assert parse_job(_job(provider="dealer")).provider == "dealer"
    with pytest.raises(
        JobError, match=r"unknown correlation provider 'he' for protocol '2pc'; choose one of"
    ):
        parse_job(_job(provider="he"))
    dealer_free = parse_job(_job(provider="ot"))
    assert dealer_free.provider == "ot" and dealer_free.dealer is None
    with pytest.raises(JobError, match=r"protocol 'rep3' takes no correlation provider"):
        parse_job(
            {**_job(protocol="rep3", provider="dealer"), "parties": {n: {"data": "x.csv"} for n in "abc"}}
        )
    with pytest.raises(JobError, match=r"protocol must be one of \['rep3', '2pc'\], got 'spdz'"):
        parse_job(_job(protocol="spdz"))


def test_config_sessions_get_the_configured_provider_over_mutual_tls(tmp_path):
    ports = free_ports(3)
    raw = {
        "protocol": "2pc",
        "provider": "dealer",
        "dealer": "d",
        "timeout": 20,
        "tls": {"certs": str(tmp_path)},
        "parties": {n: {"address": f"127.0.0.1:{p}"} for n, p in zip(("a", "b", "d"), ports)},
    }
    cfg = parse_config(raw)
    certs.init_ca(tmp_path)
    for n in cfg.names:
        certs.issue(tmp_path, n)
    with ThreadPoolExecutor(len(cfg.names)) as pool:
        runs = {n: pool.submit(run_party, cfg, n, provider_view, job="provider-test") for n in cfg.names}
        out = {n: r.result(timeout=60) for n, r in runs.items()}
    assert {n: v[:2] for n, v in out.items()} == {n: ("dealer", "DealerProvider") for n in "abd"}
    np.testing.assert_allclose(out["a"][2], [2.25, 4.0], atol=1e-3)


# -- a second provider: the choice must travel, not fall back to the default -------------------------
class TracingDealer(DealerProvider):
    """The dealer provider under another name (test only): which class a session built shows
    whether the chosen name reached it."""


@pytest.fixture
def second_provider(monkeypatch):
    """Register ``tracing`` (needs a dealer, like ``dealer``) as a non-default 2pc provider."""
    from covault.randomness import providers as registry

    entry = Provider("tracing", True, "test provider", f"{__name__}.TracingDealer")
    monkeypatch.setattr(registry, "PROVIDERS", MappingProxyType({**registry.PROVIDERS, "tracing": entry}))
    two = schemes.SCHEMES["2pc"]
    wider = replace(two, providers=(*two.providers, "tracing"))
    monkeypatch.setattr(schemes, "SCHEMES", MappingProxyType({**schemes.SCHEMES, "2pc": wider}))
    return "tracing"


def test_a_non_default_provider_reaches_every_session(second_provider):
    res = covault.run(provider_view, 2, "2pc", provider=second_provider, data_parties=["bank"])
    for party, (name, cls, product) in res.items():
        assert name == second_provider
        assert cls == ("NoneType" if party == "bank" else "TracingDealer")
        if party in ("p0", "p1"):
            np.testing.assert_allclose(product, [2.25, 4.0], atol=1e-3)
    default = covault.run(provider_view, 2, "2pc")
    assert {v[:2] for p, v in default.items() if p != "bank"} == {("dealer", "DealerProvider")}


@pytest.mark.filterwarnings("ignore:TLS is OFF")  # plaintext on purpose: this test is about the provider
def test_a_configured_non_default_provider_reaches_every_session(second_provider, tmp_path):
    ports = free_ports(3)
    raw = {
        "protocol": "2pc",
        "provider": second_provider,
        "dealer": "d",
        "timeout": 20,
        "tls": {"plaintext": True},
        "parties": {n: {"address": f"127.0.0.1:{p}"} for n, p in zip(("a", "b", "d"), ports)},
    }
    cfg = parse_config(raw)
    assert cfg.provider == second_provider
    with ThreadPoolExecutor(len(cfg.names)) as pool:
        runs = {n: pool.submit(run_party, cfg, n, provider_view, job="provider-test") for n in cfg.names}
        out = {n: r.result(timeout=60) for n, r in runs.items()}
    assert {n: v[:2] for n, v in out.items()} == {n: (second_provider, "TracingDealer") for n in "abd"}
    job = {
        **raw,
        "task": "logistic_regression",
        "label": "y",
        "parties": {"a": {"data": "a.csv"}, "b": {}, "d": {}},
    }
    assert parse_job(job, None).provider == second_provider
