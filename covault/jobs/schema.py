"""Schema agreement: what the parties tell each other in the clear before any secret computation.

One round: every party sends every other party a short JSON status. A data party's status
holds its column names (label included, file order) and its numbers of training and held-out
rows; every party's status holds the job's fingerprint (:meth:`Job.fingerprint`: task, label,
parties, seed, hyper-parameters), for MLP jobs at the compute parties and the dealer the
memory available on its host (:mod:`covault.jobs.memory`) and, if it could not prepare
(unreadable data, a bad value, ``onnx`` missing at a model receiver), the error message and its type (the message names
files, columns and rows but never a value). That is the complete public metadata of a job; label classes and values
stay secret (the class check in :mod:`covault.jobs.program` opens a single bit).

Every party then runs the same checks on the same statuses and raises the same
:class:`~covault.jobs.errors.JobError`: a party's preparation error, a different job file,
columns that differ from the first data party's (naming the party and the column), or no
held-out rows at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from covault.errors import ProtocolError
from covault.jobs.errors import DataError, JobError


@dataclass(frozen=True)
class Schema:
    """The agreed public metadata: feature names, label and each data party's row counts."""

    features: list[str]
    label: str
    train_rows: dict[str, int]
    test_rows: dict[str, int]
    kinds: dict[str, str] | None = None

    @property
    def n_train(self) -> int:
        return sum(self.train_rows.values())

    @property
    def n_test(self) -> int:
        return sum(self.test_rows.values())


def announce(session, status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Send ``status`` to every other party and receive theirs (one round): ``{party: status}``."""
    blob = np.frombuffer(json.dumps(status, sort_keys=True).encode(), dtype=np.uint8)
    others = [p for p in session.parties if p != session.party]
    got = session.net.exchange({p: [blob] for p in others}, recv_from=others)
    out = {}
    for p in session.parties:
        if p == session.party:
            out[p] = status
            continue
        try:
            msg = json.loads(np.asarray(got[p][0], dtype=np.uint8).tobytes().decode())
        except (ValueError, UnicodeDecodeError, IndexError) as exc:
            raise ProtocolError(f"party {p!r} sent a malformed job status: {exc}") from None
        if not isinstance(msg, dict):
            raise ProtocolError(f"party {p!r} sent a malformed job status")
        out[p] = msg
    return out


def agree(job, statuses: dict[str, dict[str, Any]], me: str) -> Schema:
    """Check every party's status (module docstring); the agreed :class:`Schema`.

    Features are agreed by name: the job's ``features``, else every column some data owner
    announces (its policy allows it), in order of first appearance in job order. Every owner
    must have every feature (in any order), of the same kind (text or numbers)."""
    _common_checks(job, statuses, me)
    data = job.data_parties
    if job.features is not None:
        features = list(job.features)
    else:
        features = []
        for p in data:
            features += [c for c in statuses[p]["columns"] if c not in features and c != job.label]
    kinds: dict[str, str] = {}
    first: dict[str, str] = {}
    for c in features:
        for p in data:
            got = statuses[p].get("kinds", {}).get(c)
            if c not in statuses[p]["columns"] or got is None:
                where = f" (party {first[c]!r} has it)" if c in first else ""
                raise JobError(
                    f"party {p!r} has no column {c!r}{where}: it is missing from its data or its policy "
                    "does not allow it"
                )
            kind = "number" if got == "bool" and kinds.get(c) == "number" else got
            if c in kinds and (kinds[c] == "text") != (kind == "text"):
                raise JobError(
                    f"column {c!r} holds {kinds[c]} at party {first[c]!r} and {got} at party {p!r}"
                )
            if c not in kinds or (kinds[c] == "bool" and kind == "number"):
                kinds[c] = kind
            first.setdefault(c, p)
    if not features:
        raise JobError(f"no feature columns at any data party (only the label {job.label!r})")
    train = {p: int(statuses[p]["train_rows"]) for p in data}
    test = {p: int(statuses[p]["test_rows"]) for p in data}
    if sum(train.values()) < 2:
        raise JobError(
            f"the data parties hold {sum(train.values())} training rows in all; training needs more"
        )
    if sum(test.values()) < 1:
        raise JobError("no held-out rows at any party: give some party a test file or set test_fraction > 0")
    _min_rows(statuses, data, sum(train.values()), sum(test.values()))
    return Schema(features, job.label, train, test, kinds)


def _min_rows(statuses: dict[str, dict[str, Any]], data, n_train: int, n_test: int) -> None:
    """Every owner's ``min_rows`` (announced in its status) against the pooled rows that the
    revealed outputs rest on: the model (training rows) and the metrics (held-out rows)."""
    from covault.jobs.errors import RefusedError

    for p in data:
        need = int(statuses[p].get("min_rows", 0) or 0)
        for what, n, key in (("model", n_train, "test_fraction"), ("metrics", n_test, "test_fraction")):
            if n < need:
                raise RefusedError(
                    f"{p} refused the job: rule min_rows: the {what} {'rests' if what == 'model' else 'rest'} "
                    f"on {n} pooled {'training' if what == 'model' else 'held-out'} rows, fewer than its "
                    f"min_rows = {need} (job key {key} and the owners' rows)",
                    party=p, rule="min_rows", subject=what, key=key,
                )  # fmt: skip


def _common_checks(job, statuses: dict[str, dict[str, Any]], me: str) -> None:
    failed = [s for s in statuses.values() if s.get("error")]
    if failed:
        from covault.jobs.errors import RefusedError

        types = {s.get("error_type") for s in failed}
        cls = (
            RefusedError
            if RefusedError.__name__ in types
            else DataError
            if types == {DataError.__name__}
            else JobError
        )
        raise cls("; ".join(str(s["error"]) for s in failed))
    mine = job.fingerprint()
    for p, s in statuses.items():
        if s.get("job") != mine:
            raise JobError(
                f"party {p!r} runs a different job (task, label, parties, seed or hyper-parameters "
                f"differ from those of party {me!r}); every party must use the same job file"
            )
    data = job.data_parties
    for p in data:
        s = statuses.get(p, {})
        if not isinstance(s.get("columns"), list) or "train_rows" not in s or "test_rows" not in s:
            raise JobError(f"data party {p!r} did not announce its columns and row counts")


@dataclass(frozen=True)
class VerticalSchema:
    """Agreed metadata of a vertically partitioned job: each data party's feature columns (in
    job order; together ``features``), the party holding the label, and each party's numbers of
    training and test ids (set sizes, public in a private set intersection anyway)."""

    features: list[str]
    label: str
    owners: dict[str, list[str]]
    label_party: str
    id_counts: dict[str, tuple[int, int]]


def agree_vertical(job, statuses: dict[str, dict[str, Any]], me: str) -> VerticalSchema:
    """The checks of :func:`agree` for a vertical job: same job everywhere, the label column at
    exactly one data party, no feature column at two parties."""
    _common_checks(job, statuses, me)
    owners: dict[str, list[str]] = {}
    holders = []
    seen: dict[str, str] = {}
    for p in job.data_parties:
        cols = statuses[p]["columns"]
        if job.label in cols:
            holders.append(p)
        feats = [c for c in cols if c != job.label]
        for c in feats:
            if c in seen:
                raise JobError(
                    f"column {c!r} is held by parties {seen[c]!r} and {p!r}; in a vertical job every "
                    "column has one owner (rename or drop one of them)"
                )
            seen[c] = p
        owners[p] = feats
    if not holders:
        raise JobError(
            f"label column {job.label!r} is in no data party's data (parties: {list(job.data_parties)}); "
            "in a vertical job exactly one party holds it"
        )
    if len(holders) > 1:
        raise JobError(
            f"label column {job.label!r} is held by parties {holders}; in a vertical job exactly one "
            "party holds it"
        )
    features = [c for p in job.data_parties for c in owners[p]]
    if not features:
        raise JobError("no feature columns at any data party (only ids and the label)")
    counts = {p: (int(statuses[p]["train_rows"]), int(statuses[p]["test_rows"])) for p in job.data_parties}
    return VerticalSchema(features, job.label, owners, holders[0], counts)
