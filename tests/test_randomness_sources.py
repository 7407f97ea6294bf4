"""Secrets come only from the CSPRNG: no non-cryptographic generator is used in the package."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import covault

FORBIDDEN = re.compile(
    r"np\.random|numpy\.random|^\s*import random\b|^\s*from random import|torch\.(rand|manual_seed|normal|bernoulli)",
    re.MULTILINE,
)
# Modules that synthesise or split public demo data (records of fictional or published
# patients, fictional bank customers and transactions), never shares, masks, seeds or keys.
DEMO_DATA = {"cli/showcase.py", "jobs/demo.py", "jobs/banks.py"}
# The attacker's side of the gradient-inversion evidence (covault demo --attack): the
# attacked model's initial weights, the attack's starting guesses and its baseline draws. The
# experiment is reproducible by design; its DP noise and every MPC share use the CSPRNG.
DEMO_DATA |= {"privacy/attacks/model.py", "privacy/attacks/dlg.py", "privacy/attacks/digits.py"}


def test_no_non_cryptographic_rng_in_package():
    root = Path(covault.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).as_posix() in DEMO_DATA:
            continue
        for m in FORBIDDEN.finditer(path.read_text()):
            line = path.read_text()[: m.start()].count("\n") + 1
            offenders.append(f"{path.relative_to(root)}:{line}: {m.group(0).strip()}")
    assert not offenders, "non-cryptographic RNG in library code:\n" + "\n".join(offenders)


def test_the_scan_catches_offenders():
    assert FORBIDDEN.search("x = np.random.default_rng(0).integers(5)")
    assert FORBIDDEN.search("import random\n")
    assert FORBIDDEN.search("torch.manual_seed(1)")
    assert not FORBIDDEN.search("from covault.randomness.prg import PRG")


def test_many_draws_the_values_of_separate_draws_and_counts_the_stream():
    from covault.randomness.prg import PRG

    spec = [((2, 3), np.uint8), ((4,), np.int64), (5, np.uint32), ((1, 2), np.int64), ((0,), np.int64)]
    one, two = PRG(bytes(range(16))), PRG(bytes(range(16)))
    apart = [one.words(s, d) for s, d in spec] + [one.words(3, np.int64)]
    together = [*two.many(spec), two.words(3, np.int64)]  # unaligned parts (after 6 bytes) too
    for a, b in zip(apart, together, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert one.drawn == two.drawn == 6 + 32 + 20 + 16 + 24
