"""Test helpers shared by the test modules: run a program under each protocol and check that every
compute party agrees; a value at its owner only."""

from __future__ import annotations

import numpy as np

import covault

PROTOCOLS = [("2pc", 2), ("rep3", 3)]
ULP = 2.0**-16


def run_both(program, proto, **kw):
    """Run ``program`` under ``proto`` = (name, n); return the first compute party's result
    after checking that every compute party returned the same thing."""
    name, n = proto
    res = covault.run(program, n, name, **kw)
    compute = [p for p in res if p != "dealer"]
    first = res[compute[0]]
    for p in compute[1:]:
        _assert_same(first, res[p])
    return first


def _assert_same(a, b):
    if isinstance(a, tuple | list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def owner_value(session, value, owner=None):
    """``value`` at the owner (default: first compute party), None elsewhere."""
    owner = owner or session.compute_parties[0]
    return value if session.party == owner else None
