"""pytest fixtures (the shared helpers are in tests/helpers.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

import covault
from tests.helpers import VARIANTS

# Calibrations of the matmul engines go to a cache of this test run, never to the user's (the
# party processes tests start inherit it); no method is forced on the tests.
os.environ["COVAULT_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="covault-test-cache-")
os.environ.pop("COVAULT_MATMUL", None)
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(params=VARIANTS, ids=[v.id for v in VARIANTS])
def proto(request):
    """Every scheme, and 2pc with the dealer-free ``ot`` provider: ``covault.run`` of a 2pc
    program that names no provider then uses it."""
    return request.param


def pytest_addoption(parser):
    parser.addoption(
        "--provider",
        default=None,
        help="run every 2pc computation of the tests with this correlation provider (e.g. ot)",
    )


@pytest.fixture(autouse=True)
def _provider_option(request, monkeypatch):
    """With ``--provider NAME``, ``covault.run`` of a 2pc program that names no provider uses
    NAME (tests that count rounds or the dealer's traffic then report the difference)."""
    name = request.config.getoption("--provider")
    if name is not None:
        _use_provider(monkeypatch, name)


@pytest.fixture(autouse=True)
def _variant_provider(request, monkeypatch):
    """A test parametrised by ``proto`` over :data:`tests.helpers.VARIANTS` whose variant names a
    provider: ``covault.run`` of a 2pc program that names none uses it."""
    callspec = getattr(request.node, "callspec", None)
    provider = getattr(callspec.params.get("proto") if callspec else None, "provider", None)
    if provider is not None:
        _use_provider(monkeypatch, provider)


def _use_provider(monkeypatch, name: str) -> None:
    run = covault.run

    def with_provider(program, parties=3, protocol=covault.schemes.DEFAULT, *args, **kw):
        if protocol == "2pc" and kw.get("provider") is None:
            kw["provider"] = name
        return run(program, parties, protocol, *args, **kw)

    monkeypatch.setattr(covault, "run", with_provider)
