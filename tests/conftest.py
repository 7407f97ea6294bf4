"""pytest fixtures (the shared helpers are in tests/helpers.py)."""

from __future__ import annotations

import pytest

from tests.helpers import PROTOCOLS


@pytest.fixture(params=PROTOCOLS, ids=[p for p, _ in PROTOCOLS])
def proto(request):
    return request.param
