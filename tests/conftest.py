"""pytest fixtures (the shared helpers are in tests/helpers.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

import covault
from tests.helpers import PROTOCOLS

# Calibrations of the matmul engines go to a cache of this test run, never to the user's (the
# party processes tests start inherit it); no method is forced on the tests.
os.environ["COVAULT_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="covault-test-cache-")
os.environ.pop("COVAULT_MATMUL", None)
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(params=PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def proto(request):
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
    if name is None:
        return
    run = covault.run

    def with_provider(program, parties=3, protocol=covault.schemes.DEFAULT, *args, **kw):
        if protocol == "2pc" and kw.get("provider") is None:
            kw["provider"] = name
        return run(program, parties, protocol, *args, **kw)

    monkeypatch.setattr(covault, "run", with_provider)
