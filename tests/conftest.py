"""pytest fixtures (the shared helpers are in tests/helpers.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from tests.helpers import PROTOCOLS

# Calibrations of the matmul engines go to a cache of this test run, never to the user's (the
# party processes tests start inherit it); no method is forced on the tests.
os.environ["COVAULT_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="covault-test-cache-")
os.environ.pop("COVAULT_MATMUL", None)
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(params=PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def proto(request):
    return request.param
