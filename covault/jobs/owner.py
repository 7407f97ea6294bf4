"""A data owner's side of a horizontal job, decided at the owner before anything is sent.

1. **Policy, usage**: the owner's policy (``policy = "NAME.policy.toml"``; without one, the
   default policy: every column allowed, PII-looking columns refused) is checked against the
   job: task, receivers of the model, regions of the receivers and of the share holders
   (:func:`covault.ingest.policy.check_usage`).
2. **Read** the job's columns (``features`` and the label, by name, in any order in the source;
   without ``features``, every column) through the connectors (CSV, Parquet, SQL, frames).
3. **Policy, columns**: allowed and denied columns, PII actions (drop, hash, generalize,
   redact); a used column that looks like PII and has no rule refuses the job
   (:func:`covault.ingest.policy.apply_policy`); then the columns of ``[privacy.local_dp]``
   are noised (:mod:`covault.ingest.local_dp`; charged after the schema round,
   :mod:`covault.jobs.budget`).
4. **Label and split**: the label must be a number (classes ``0 .. n_classes - 1`` for
   classification) in every row; ``test_fraction`` of the rows are held out (stratified, from
   the public seed) unless the owner gives a ``test`` source.

The transforms need the pooled statistics (:mod:`covault.ingest.stats`); they are applied
after the schema round (:func:`covault.jobs.program.run_job_party`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from covault.ingest.connectors import describe, read_table, source_columns
from covault.ingest.errors import DataError as IngestDataError
from covault.ingest.errors import PolicyError
from covault.ingest.local_dp import apply_local_dp
from covault.ingest.policy import (
    JobView,
    Policy,
    apply_policy,
    check_usage,
    load_policy,
    parse_policy,
    plan_columns,
)
from covault.ingest.table import Column, Table
from covault.ingest.transforms import LocalStatistics, Preprocessing, build_preprocessing, local_statistics
from covault.jobs.data import split_rows
from covault.jobs.errors import DataError, JobError, RefusedError


@dataclass(frozen=True, eq=False)
class OwnerRows:
    """A data owner's usable rows: ``table`` holds the feature candidates and the label,
    training rows first (``n_train``), then held-out rows (``n_test``); ``features`` the
    candidates in source order and ``kinds`` their kinds; ``verdicts`` the policy's verdict on
    every source column."""

    party: str
    table: Table
    n_train: int
    n_test: int
    features: list[str]
    kinds: dict[str, str]
    verdicts: list[Any] = field(default_factory=list)
    policy: Policy | None = None

    @property
    def y(self) -> np.ndarray:
        return self.table.columns[-1].values

    def train(self) -> Table:
        """The training rows: views of the table's first ``n_train`` rows (no copy)."""
        t = self.table
        return Table([Column(c.name, c.kind, c.values[: self.n_train]) for c in t.columns], t.source)

    def status(self) -> dict[str, Any]:
        """What this owner announces in the schema round (public)."""
        return {
            "columns": self.features,
            "kinds": self.kinds,
            "train_rows": self.n_train,
            "test_rows": self.n_test,
            "min_rows": 0 if self.policy is None else int(self.policy.min_rows),
        }


def owner_policy(job, party: str) -> Policy:
    """``party``'s policy: its file, or the default policy (no column restriction; PII-looking
    columns need a rule)."""
    path = job.policy.get(party)
    return load_policy(path) if path is not None else parse_policy({}, None)


def job_view(job, party: str, revealed_rows: dict[str, int] | None = None) -> JobView:
    """What ``party``'s policy needs to know of ``job``."""
    return JobView(
        owner=party,
        task=job.task,
        features=job.features,
        label=job.label,
        id_column=job.id_column,
        reveal_to=tuple(job.reveal_model_to),
        share_holders=tuple(job.compute),
        regions=job.regions,
        revealed_rows=dict(revealed_rows or {}),
    )


def refused(party: str, exc: PolicyError) -> RefusedError:
    """The error every party raises when ``party``'s policy refuses the job."""
    msg = str(exc)
    return RefusedError(
        msg if msg.startswith(f"{party} refused") else f"{party} refused the job: {msg}",
        party=party,
        rule=exc.rule,
        subject=exc.subject,
        key=exc.key,
    )


def check_owner_usage(job, party: str) -> None:
    """A vertical job's policy check at data owner ``party``, before anything leaves it:
    RefusedError when its policy refuses the job's usage or regions, or any of its columns
    (:func:`check_vertical_columns`); DataError naming the party for an unreadable source."""
    try:
        policy = owner_policy(job, party)
        check_usage(policy, job_view(job, party))
        check_vertical_columns(job, party, policy)
    except PolicyError as exc:
        raise refused(party, exc) from None
    except IngestDataError as exc:
        raise DataError(f"party {party!r}: {exc}") from None


def check_vertical_columns(job, party: str, policy: Policy) -> None:
    """A vertical job uses every column of the owner's sources as it is (the id to join, the
    others as features or the label): PolicyError for the first column the policy denies, drops,
    redacts or that looks like PII without a rule, for a ``[pii]`` hash or generalize rule, and
    for a column under ``[privacy.local_dp]`` (used raw, its local noise would be bypassed):
    rules a vertical job cannot apply."""
    sources = [job.data.get(party), job.test.get(party)]
    for source in (s for s in sources if s is not None):
        table = read_table(source)
        noised = [c for c in table.names if c in policy.local_dp]
        if noised:
            raise PolicyError(
                f"{policy.where(party)}: rule privacy.local_dp: column {noised[0]!r} is noised locally "
                f"([privacy.local_dp] {noised[0]} = epsilon {policy.local_dp[noised[0]].epsilon:g}); a "
                "vertical job would use it raw and bypass that noise (job key partition)",
                rule="privacy.local_dp",
                subject=noised[0],
                key="partition",
            )
        used = tuple(c for c in table.names if c not in (job.id_column, job.label))
        view = replace(job_view(job, party), features=used)
        for v in plan_columns(policy, table, view):
            if v.error is not None:
                raise v.error
            if v.verdict in ("hashed", "generalized"):
                raise PolicyError(
                    f"{policy.where(party)}: rule pii: column {v.column!r} ([pii] {v.column} = "
                    f"{policy.pii[v.column]}): a vertical job uses its columns as they are and cannot "
                    "apply it (job key partition)",
                    rule="pii",
                    subject=v.column,
                    key="partition",
                )


def prepare_owner(job, party: str) -> OwnerRows:
    """Steps 1-4 of the module docstring at data owner ``party``; raises DataError naming the
    party or RefusedError naming the rule."""
    try:
        return _prepare(job, party)
    except PolicyError as exc:
        raise refused(party, exc) from None
    except JobError as exc:
        msg = str(exc)
        raise DataError(msg if msg.startswith(f"party {party!r}") else f"party {party!r}: {msg}") from None
    except IngestDataError as exc:
        raise DataError(f"party {party!r}: {exc}") from None


def _prepare(job, party: str) -> OwnerRows:
    policy = owner_policy(job, party)
    view = job_view(job, party)
    check_usage(policy, view)
    source = job.data.get(party)
    if source is None:
        raise DataError(
            f"party {party!r} owns data in this job but has no data source: give it "
            f"--local {party}.local.toml (data = ...) or data = ... in [parties.{party}]"
        )
    wanted = _wanted(job, party, source)
    table = read_table(source, columns=wanted)
    table, verdicts = apply_policy(policy, table, view)
    table = apply_local_dp(table, policy.local_dp, party)  # [privacy.local_dp]: noised here, first
    features = [c for c in table.names if c not in (job.label, job.id_column)]
    _check_rows(job, table, features)
    n_train = table.n_rows
    if party in job.test:
        test = read_table(job.test[party], columns=wanted)
        test, _ = apply_policy(policy, test, view)
        test = apply_local_dp(test, policy.local_dp, party)
        missing = [c for c in table.names if c not in test.names]
        if missing:
            raise DataError(f"{test.source} has no column {missing[0]!r} ({table.source} has it)")
        _check_rows(job, test, features)
        table = concat(table, test.select(table.names))
    table = table.select([*features, job.label])
    if party not in job.test:
        y = table[job.label].values
        tr, te = split_rows(y, job.test_fraction, job.seed, party, job.kind == "classification")
        cols, source = table.columns, table.source
        table = None  # reordered one column at a time: a large table is never held twice
        table = Table(_take_each(cols, np.concatenate([tr, te])), source)
        n_train = len(tr)
    kinds = {c: table[c].kind for c in features}
    return OwnerRows(party, table, n_train, table.n_rows - n_train, features, kinds, verdicts, policy)


def _take_each(cols: list[Column], rows: np.ndarray) -> list[Column]:
    """The columns' values at ``rows``; each source column leaves ``cols`` (and, held nowhere
    else, memory) as soon as its reordered copy exists."""
    out = []
    while cols:
        c = cols.pop(0)
        out.append(Column(c.name, c.kind, c.values[rows]))
    return out


def _wanted(job, party: str, source) -> list[str]:
    """The columns to read: the features and the label (every column without ``features``)."""
    names = source_columns(source)
    if job.features is None:
        if job.label not in names:
            raise DataError(f"label column {job.label!r} (job key label) is not in {describe(source)}")
        return names
    want = [*job.features, job.label]
    for c in want:
        if c not in names:
            key = "label" if c == job.label else "features"
            close = [n for n in names if n.lower() == c.lower() or n.strip() == c]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"column {c!r} (job key {key}) is not in {describe(source)}{hint}")
    return want


def _check_rows(job, table: Table, features: list[str]) -> None:
    """The label of every row, and no missing cell in a number column without ``impute``."""
    _labels(job, table)
    for c in features:
        col = table[c]
        t = job.transforms.get(c)
        if col.kind == "text" and (t is None or t.categories is None):
            r = next((i for i, v in enumerate(col.values) if v is not None and not _number(v)), 0)
            raise DataError(
                f"{table.source}: column {c!r} holds text (row {r + 1} is not a number); give it "
                f"categories in [transform] ({c} = {{ categories = [...] }}) or fix the cell"
            )
        if col.kind == "text" or (job.transforms.get(c) is not None and job.transforms[c].impute is not None):
            continue
        miss = np.flatnonzero(col.missing)
        if miss.size:
            raise DataError(
                f"{table.source}: column {c!r}, row {miss[0] + 1}: missing value; declare how to fill it, "
                f'e.g. [transform] {c} = {{ impute = "mean" }}'
            )


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _labels(job, table: Table) -> np.ndarray:
    col = table[job.label]
    if col.kind == "text":
        raise DataError(f"{table.source}: label column {job.label!r} holds text; labels must be numbers")
    y = col.values
    miss = np.flatnonzero(np.isnan(y))
    if miss.size:
        raise DataError(f"{table.source}: label column {job.label!r}, row {miss[0] + 1}: missing label")
    if job.kind == "classification":
        k = job.n_classes
        bad = np.flatnonzero((y != np.round(y)) | (y < 0) | (y >= k))
        if bad.size:
            want = "0 or 1" if k == 2 else f"integers 0 .. {k - 1} (n_classes = {k})"
            raise DataError(
                f"{table.source}: label column {job.label!r}, row {bad[0] + 1}: class labels must be {want}"
            )
    return y


def concat(a: Table, b: Table) -> Table:
    """The rows of ``a`` then those of ``b`` (same column names; text wins over numbers)."""
    cols = []
    for name in a.names:
        x, y = a[name], b[name]
        if x.kind == y.kind:
            cols.append(Column(name, x.kind, np.concatenate([x.values, y.values])))
        elif "text" in (x.kind, y.kind):
            raise DataError(f"column {name!r} holds {x.kind} in {a.source} and {y.kind} in {b.source}")
        else:
            cols.append(Column(name, "number", np.concatenate([x.values, y.values])))
    return Table(cols, a.source)


def statistics(rows: OwnerRows, inputs, transforms) -> LocalStatistics:
    """This owner's part of the pooled statistics: exponents over all its rows (held-out rows
    too, so that they fit the chosen scale), sums and counts of the training rows (the mean
    imputation is fitted on training rows only)."""
    every = local_statistics(rows.table, inputs, transforms)
    train = local_statistics(rows.train(), inputs, transforms)
    return LocalStatistics(
        every.mean_columns, every.scaled_columns, every.exponents, train.sums, train.counts
    )


def plain_preprocessing(parts: list[OwnerRows], inputs, transforms) -> Preprocessing:
    """The Preprocessing the secure statistics give, computed in the clear from every owner's
    rows (plaintext comparison, tests)."""
    stats = [statistics(p, inputs, transforms) for p in parts]
    exps = np.max([s.exponents for s in stats], axis=0)
    sums = np.sum([s.sums for s in stats], axis=0)
    counts = np.sum([s.counts for s in stats], axis=0)
    means = {}
    for i, name in enumerate(stats[0].mean_columns):
        if not counts[i]:
            raise JobError(
                f"column {name!r}: no data owner has a value in it, so impute = 'mean' has nothing to average"
            )
        means[name] = float(sums[i] / counts[i])
    return build_preprocessing(inputs, transforms, exps, means)


def secure_preprocessing(session, job, schema, rows: OwnerRows | None) -> Preprocessing:
    """The job's transforms with their pooled statistics (SPMD, every party of ``session``):
    :func:`covault.ingest.stats.fit_preprocessing` over the data owners, fed with
    :func:`statistics` of this owner's rows."""
    from covault.ingest.stats import fit_preprocessing

    inputs = [(f, schema.kinds[f]) for f in schema.features]
    local = statistics(rows, inputs, job.transforms) if rows is not None else None
    return fit_preprocessing(session, job.data_parties, local, inputs, job.transforms)
