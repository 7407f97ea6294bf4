"""Local differential privacy at the data owner: columns noised before anything leaves it.

A data owner's policy may noise some of its columns itself (``[privacy.local_dp]`` of
``NAME.policy.toml``, ``docs/privacy.md``), for every job that uses them:

- a **number** column with ``bounds = [lo, hi]``: each cell clipped to the bounds, snapped to
  the fixed-point grid and given Laplace noise of scale ``(hi - lo) / epsilon`` on that grid
  (:func:`covault.privacy.mechanisms.bounded_laplace`);
- a **bool** column (0/1): randomized response, the cell kept with probability
  ``e^epsilon / (e^epsilon + 1)``, else flipped;
- a **text** column with ``categories``: k-ary randomized response over the categories (a cell
  outside them, or missing, first becomes the first category).

Each cell is then ``epsilon``-DP on its own (local DP): no party, compute or not, and no
coalition of all of them, learns more of it than the noisy value. A missing number or bool
stays missing: whether a cell is missing is not protected. Noise comes from a fresh covault
CSPRNG stream per table (:mod:`covault.privacy.noise`). Every job that uses the columns draws
fresh noise, so each use is a new release, charged to the owner's ledger (the sum of the
epsilons of the noised columns it uses: one row is in all of them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covault.ingest.errors import PolicyError
from covault.ingest.table import Column, Table
from covault.privacy.mechanisms import bounded_laplace, randomized_response
from covault.randomness.prg import PRG, new_seed


@dataclass(frozen=True)
class LocalDP:
    """One column's local DP: ``epsilon``, and ``bounds`` (numbers) or ``categories`` (text);
    neither for a bool column."""

    epsilon: float
    bounds: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epsilon": self.epsilon}
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out


def _error(path: Path | None, key: str, problem: str) -> PolicyError:
    where = f"policy file {path}" if path is not None else "policy"
    return PolicyError(f"{where}: key {key}: {problem}", rule="file", subject=key)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_local_dp(raw: Any, path: Path | None = None) -> dict[str, LocalDP]:
    """The ``[privacy.local_dp]`` table as ``{column: LocalDP}``; PolicyError (rule ``file``)
    naming the key for a bad value."""
    if not isinstance(raw, Mapping):
        raise _error(path, "privacy.local_dp", "must be a table of column = { epsilon = ..., ... }")
    out = {}
    for column, spec in raw.items():
        key = f"privacy.local_dp.{column}"
        if not isinstance(spec, Mapping):
            raise _error(
                path, key, "must be a table { epsilon = ..., bounds = [lo, hi] | categories = [...] }"
            )
        extra = sorted(set(spec) - {"epsilon", "bounds", "categories"})
        if extra:
            raise _error(path, f"{key}.{extra[0]}", "unknown key (keys: epsilon, bounds, categories)")
        eps = spec.get("epsilon")
        if not _finite(eps) or eps <= 0:
            raise _error(path, f"{key}.epsilon", f"must be a finite number > 0, got {eps!r}")
        bounds, cats = spec.get("bounds"), spec.get("categories")
        if bounds is not None and cats is not None:
            raise _error(path, key, "give bounds (a number column) or categories (text), not both")
        if bounds is not None:
            if not isinstance(bounds, list) or len(bounds) != 2 or not all(_finite(b) for b in bounds):
                raise _error(path, f"{key}.bounds", f"must be [lo, hi], two finite numbers, got {bounds!r}")
            if not bounds[0] < bounds[1]:
                raise _error(path, f"{key}.bounds", f"lo {bounds[0]} must be below hi {bounds[1]}")
            bounds = (float(bounds[0]), float(bounds[1]))
        if cats is not None:
            ok = isinstance(cats, list) and len(cats) >= 2 and all(isinstance(c, str) and c for c in cats)
            if not ok or len(set(cats)) != len(cats):
                raise _error(
                    path, f"{key}.categories", "must be a list of at least 2 distinct non-empty strings"
                )
            cats = tuple(cats)
        out[str(column)] = LocalDP(float(eps), bounds, cats)
    return out


def local_epsilon(rules: Mapping[str, LocalDP], columns: list[str] | tuple[str, ...]) -> float:
    """The epsilon one use of ``columns`` spends: the sum over the noised ones among them."""
    return math.fsum(rules[c].epsilon for c in columns if c in rules)


def apply_local_dp(table: Table, rules: Mapping[str, LocalDP], owner: str, prg: PRG | None = None) -> Table:
    """``table`` with every column that has a rule noised (module docstring); PolicyError (rule
    ``privacy.local_dp``) naming the owner and the column when the rule does not fit its kind."""
    prg = prg if prg is not None else PRG(new_seed())
    out = []
    for col in table.columns:
        rule = rules.get(col.name)
        out.append(col if rule is None else _noised(col, rule, owner, prg))
    return Table(out, table.source)


def _refuse(owner: str, column: Column, problem: str) -> PolicyError:
    return PolicyError(
        f"policy of {owner}: rule privacy.local_dp: column {column.name!r} holds {column.kind}s; {problem}",
        rule="privacy.local_dp",
        subject=column.name,
    )


def _noised(col: Column, rule: LocalDP, owner: str, prg: PRG) -> Column:
    if col.kind == "number":
        if rule.bounds is None:
            raise _refuse(owner, col, "give bounds = [lo, hi] (the Laplace noise is scaled to them)")
        values = np.asarray(col.values, dtype=np.float64)
        missing = np.isnan(values)
        noisy = bounded_laplace(prg, np.where(missing, rule.bounds[0], values), rule.bounds, rule.epsilon)
        return Column(col.name, "number", np.where(missing, np.nan, noisy))
    if col.kind == "bool":
        if rule.bounds is not None or rule.categories is not None:
            raise _refuse(owner, col, "a 0/1 column takes epsilon alone (randomized response)")
        values = np.asarray(col.values, dtype=np.float64)
        missing = np.isnan(values)
        flipped = randomized_response(prg, np.where(missing, 0, values).astype(np.int64), 2, rule.epsilon)
        return Column(col.name, "bool", np.where(missing, np.nan, flipped.astype(np.float64)))
    if rule.categories is None:
        raise _refuse(owner, col, "give categories = [...] (randomized response among them)")
    index = {c: i for i, c in enumerate(rule.categories)}
    codes = np.array(
        [index.get(v.strip() if isinstance(v, str) else v, 0) for v in col.values], dtype=np.int64
    )
    answers = randomized_response(prg, codes, len(rule.categories), rule.epsilon)
    cells = np.empty(len(answers), dtype=object)
    cells[:] = [rule.categories[i] for i in answers]
    return Column(col.name, "text", cells)
