"""A data owner's policy: what of its data may enter a joint computation, and on what terms.

One TOML file per owner (``NAME.policy.toml``, ``docs/policy.md``): which columns may be used
(``allow_columns`` / ``deny_columns``), what to do with personal data (``[pii]``: drop, hash,
generalize, redact or keep a column), which tasks may run (``allowed_tasks``), who may receive
models and metrics (``reveal_to``) and in which regions (``[outputs]``), and the fewest pooled
rows a revealed output may rest on (``min_rows``), and its differential-privacy budget
(``[privacy]``: the cap ``max_epsilon``, the ledger, columns noised locally; ``docs/privacy.md``). Everything is decided at the owner, from a
:class:`JobView` of the job (this module never imports the job layer). Every refusal is a
:class:`PolicyError` that names the rule, the column or party, and the job key, never a value.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covault.ingest.errors import PolicyError
from covault.ingest.local_dp import LocalDP, parse_local_dp
from covault.ingest.pii import Finding, detect
from covault.ingest.table import Column, Table

KEYS = ("allow_columns", "deny_columns", "allowed_tasks", "reveal_to", "min_rows", "hash_key_file", "pii")
OUTPUT_KEYS = ("model_to_regions", "shares_to_regions")
PRIVACY_KEYS = ("max_epsilon", "ledger", "local_dp")
ACTIONS = ("drop", "hash", "redact", "keep", "generalize")
MIN_KEY_BYTES = 16
VERDICTS = ("feature", "label", "id", "dropped", "hashed", "generalized", "redacted", "refused")


@dataclass(frozen=True)
class PiiRule:
    """What the policy does with one column: ``action`` one of :data:`ACTIONS`; for
    ``generalize``, ``edges`` (numbers: bin edges) or ``prefix`` (text: characters kept)."""

    action: str
    edges: tuple[float, ...] | None = None
    prefix: int | None = None

    def __str__(self) -> str:
        if self.action != "generalize":
            return f'"{self.action}"'
        if self.edges is not None:
            return "{ generalize = [" + ", ".join(f"{e:g}" for e in self.edges) + "] }"
        return f"{{ generalize = {self.prefix} }}"


@dataclass(frozen=True)
class Policy:
    """A parsed policy file (module docstring; ``docs/policy.md`` for each key)."""

    path: Path | None = None
    allow_columns: tuple[str, ...] | None = None
    deny_columns: tuple[str, ...] = ()
    pii: dict[str, PiiRule] = field(default_factory=dict)
    allowed_tasks: tuple[str, ...] | None = None
    reveal_to: tuple[str, ...] | None = None
    min_rows: int = 0
    model_to_regions: tuple[str, ...] | None = None
    shares_to_regions: tuple[str, ...] | None = None
    hash_key_file: Path | None = None
    max_epsilon: float | None = None
    ledger: Path | None = None
    local_dp: dict[str, LocalDP] = field(default_factory=dict)

    def ledger_file(self, owner: str) -> Path | None:
        """The owner's privacy ledger: ``[privacy] ledger``, else ``OWNER.privacy.sqlite`` beside
        the policy file (None for the default policy, which has no file and no cap)."""
        if self.ledger is not None:
            return self.ledger
        return None if self.path is None else self.path.parent / f"{owner}.privacy.sqlite"

    def where(self, owner: str) -> str:
        """``policy of bank_b (bank_b.policy.toml)``: the start of every refusal."""
        return f"policy of {owner}" + (f" ({self.path.name})" if self.path is not None else "")


@dataclass(frozen=True)
class JobView:
    """What the policy needs to know about a job, seen from the data owner ``owner``.

    ``features``: the job's declared features (None: every column but label and id);
    ``reveal_to``: the parties that receive the model and metrics (job key ``reveal_model_to``);
    ``share_holders``: the compute parties, which receive shares of this owner's data (job key
    ``compute``); ``regions``: each party's region label from the consortium config (None or
    absent: none given); ``revealed_rows``: output (``model``, ``metrics``) -> pooled rows it
    rests on, known after the schema round."""

    owner: str
    task: str
    features: tuple[str, ...] | None
    label: str
    id_column: str | None = None
    reveal_to: tuple[str, ...] = ()
    share_holders: tuple[str, ...] = ()
    regions: dict[str, str | None] = field(default_factory=dict)
    revealed_rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnVerdict:
    """What happens to one source column: ``verdict`` one of :data:`VERDICTS` and why
    (``reason``: ``"deny_columns"``, ``"pii: drop"``, ``"not in features"``, ...); ``role``:
    ``feature``, ``label`` or ``id`` where the job uses the column; ``finding``: what PII
    detection saw; ``error``: the refusal, where ``verdict`` is ``refused``."""

    column: str
    verdict: str
    reason: str
    role: str | None = None
    finding: Finding | None = field(default=None, compare=False)
    error: PolicyError | None = field(default=None, compare=False)


# -- the file -----------------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and check the policy file ``path`` (PolicyError, rule ``file``, naming the key)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise PolicyError(f"policy file {p}: cannot read it ({e.strerror})", rule="file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PolicyError(f"policy file {p}: not valid TOML ({e})", rule="file") from None
    return parse_policy(raw, p)


def _file_error(path: Path | None, key: str, problem: str) -> PolicyError:
    where = f"policy file {path}" if path is not None else "policy"
    return PolicyError(f"{where}: key {key}: {problem}", rule="file", subject=key)


def _names(raw: Any, key: str, path: Path | None) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, str) and v.strip() for v in raw):
        raise _file_error(path, key, "must be a list of non-empty names")
    if len(set(raw)) != len(raw):
        dup = sorted({v for v in raw if raw.count(v) > 1})
        raise _file_error(path, key, f"names {dup} appear more than once")
    return tuple(raw)


def _pii_rule(raw: Any, column: str, path: Path | None) -> PiiRule:
    key = f"pii.{column}"
    if isinstance(raw, str):
        if raw not in ACTIONS or raw == "generalize":
            raise _file_error(
                path,
                key,
                f'unknown action {raw!r} (one of "drop", "hash", "redact", "keep", {{ generalize = ... }})',
            )
        return PiiRule(raw)
    if not isinstance(raw, dict) or set(raw) != {"generalize"}:
        raise _file_error(path, key, 'must be "drop", "hash", "redact", "keep" or { generalize = ... }')
    g = raw["generalize"]
    if isinstance(g, int) and not isinstance(g, bool):
        if g < 1:
            raise _file_error(
                path, key, f"generalize = N keeps the first N characters; N must be >= 1, got {g}"
            )
        return PiiRule("generalize", prefix=g)
    if (
        isinstance(g, list)
        and g
        and all(isinstance(e, int | float) and not isinstance(e, bool) and np.isfinite(e) for e in g)
    ):
        edges = tuple(float(e) for e in g)
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise _file_error(path, key, "generalize edges must be strictly increasing")
        return PiiRule("generalize", edges=edges)
    raise _file_error(
        path, key, "generalize takes a list of bin edges (numbers) or a number of characters (text)"
    )


def parse_policy(raw: Mapping[str, Any], path: str | Path | None = None) -> Policy:
    """Check a policy's parsed TOML ``raw`` (from the file ``path``: key files are relative to
    its folder). Unknown keys and bad values: PolicyError, rule ``file``, naming the key."""
    p = Path(path) if path is not None else None
    for key in raw:
        if key not in (*KEYS, "outputs", "privacy"):
            raise _file_error(p, key, f"unknown key (keys: {', '.join((*KEYS, 'outputs', 'privacy'))})")
    outputs = raw.get("outputs", {})
    if not isinstance(outputs, dict):
        raise _file_error(p, "outputs", "must be a table [outputs]")
    for key in outputs:
        if key not in OUTPUT_KEYS:
            raise _file_error(p, f"outputs.{key}", f"unknown key (keys: {', '.join(OUTPUT_KEYS)})")

    def names(key: str, src: Mapping[str, Any] = raw, label: str | None = None) -> tuple[str, ...] | None:
        return _names(src[key], label or key, p) if key in src else None

    min_rows = raw.get("min_rows", 0)
    if not isinstance(min_rows, int) or isinstance(min_rows, bool) or min_rows < 0:
        raise _file_error(p, "min_rows", f"must be a whole number >= 0, got {min_rows!r}")
    key_file = _file_path(raw.get("hash_key_file"), "hash_key_file", p)
    pii_raw = raw.get("pii", {})
    if not isinstance(pii_raw, dict):
        raise _file_error(p, "pii", "must be a table [pii] of column = action")
    pii = {str(c): _pii_rule(v, str(c), p) for c, v in pii_raw.items()}
    max_epsilon, ledger, local_dp = _privacy(raw.get("privacy", {}), p)
    hashed = sorted(c for c, r in pii.items() if r.action == "hash")
    if hashed and key_file is None:
        raise _file_error(p, "hash_key_file", f"[pii] hashes {hashed} but the policy names no hash_key_file")
    return Policy(
        path=p,
        allow_columns=names("allow_columns"),
        deny_columns=names("deny_columns") or (),
        pii=pii,
        allowed_tasks=names("allowed_tasks"),
        reveal_to=names("reveal_to"),
        min_rows=min_rows,
        model_to_regions=names("model_to_regions", outputs, "outputs.model_to_regions"),
        shares_to_regions=names("shares_to_regions", outputs, "outputs.shares_to_regions"),
        hash_key_file=key_file,
        max_epsilon=max_epsilon,
        ledger=ledger,
        local_dp=local_dp,
    )


def _file_path(value: Any, key: str, p: Path | None) -> Path | None:
    """A file named by the policy (None if absent), relative to the policy file's folder."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _file_error(p, key, "must be a file name")
    path = Path(value)
    return path if path.is_absolute() or p is None else p.parent / path


def _privacy(raw: Any, p: Path | None) -> tuple[float | None, Path | None, dict[str, LocalDP]]:
    """``[privacy]``: the cap ``max_epsilon`` (a number >= 0), the ``ledger`` file (relative to
    the policy file) and ``[privacy.local_dp]``."""
    if not isinstance(raw, dict):
        raise _file_error(p, "privacy", "must be a table [privacy]")
    for key in raw:
        if key not in PRIVACY_KEYS:
            raise _file_error(p, f"privacy.{key}", f"unknown key (keys: {', '.join(PRIVACY_KEYS)})")
    cap = raw.get("max_epsilon")
    if cap is not None and (
        isinstance(cap, bool) or not isinstance(cap, int | float) or not np.isfinite(cap) or cap < 0
    ):
        raise _file_error(p, "privacy.max_epsilon", f"must be a finite number >= 0, got {cap!r}")
    ledger = _file_path(raw.get("ledger"), "privacy.ledger", p)
    local = parse_local_dp(raw.get("local_dp", {}), p)
    return None if cap is None else float(cap), ledger, local


# -- usage: task, receivers, regions, rows ------------------------------------------------------


def _regions(
    policy: Policy,
    job: JobView,
    rule: str,
    allowed: tuple[str, ...],
    parties: Sequence[str],
    what: str,
    key: str,
) -> list[PolicyError]:
    out = []
    for party in parties:
        if party == job.owner:
            continue  # the owner itself: nothing leaves it
        region = job.regions.get(party)
        if region is None:
            where = f"{party!r}, whose region is unknown (no region in the consortium config)"
        elif region not in allowed:
            where = f"{party!r} in region {region!r}"
        else:
            continue
        out.append(
            PolicyError(
                f"{policy.where(job.owner)}: rule {rule}: the job {what} {where} (job key {key}); "
                f"allowed regions: {', '.join(allowed)}",
                rule=rule,
                subject=party,
                key=key,
            )
        )
    return out


def usage_refusals(policy: Policy, job: JobView) -> list[PolicyError]:
    """Every refusal of :func:`check_usage`, in that order (for a dry run)."""
    where = policy.where(job.owner)
    out = []
    if policy.allowed_tasks is not None and job.task not in policy.allowed_tasks:
        out.append(
            PolicyError(
                f"{where}: rule allowed_tasks: the job's task is {job.task!r} (job key task); "
                f"allowed tasks: {', '.join(policy.allowed_tasks) or 'none'}",
                rule="allowed_tasks",
                subject=job.task,
                key="task",
            )
        )
    if policy.reveal_to is not None:
        for party in job.reveal_to:
            if party not in policy.reveal_to:
                out.append(
                    PolicyError(
                        f"{where}: rule reveal_to: the job reveals the model and metrics to {party!r} "
                        f"(job key reveal_model_to); the policy reveals only to: "
                        f"{', '.join(policy.reveal_to) or 'nobody'}",
                        rule="reveal_to",
                        subject=party,
                        key="reveal_model_to",
                    )
                )
    if policy.model_to_regions is not None:
        out += _regions(
            policy,
            job,
            "outputs.model_to_regions",
            policy.model_to_regions,
            job.reveal_to,
            "reveals the model to",
            "reveal_model_to",
        )
    if policy.shares_to_regions is not None:
        out += _regions(
            policy,
            job,
            "outputs.shares_to_regions",
            policy.shares_to_regions,
            job.share_holders,
            "sends shares of this owner's data to",
            "compute",
        )
    return out


def check_usage(policy: Policy, job: JobView) -> None:
    """Refuse (PolicyError) a job whose task, receivers of the model, or regions of the model's
    receivers and of the share holders the policy does not allow."""
    refusals = usage_refusals(policy, job)
    if refusals:
        raise refusals[0]


def check_min_rows(policy: Policy, job: JobView) -> None:
    """Refuse (PolicyError, rule ``min_rows``) when a revealed output (``job.revealed_rows``)
    rests on fewer pooled rows than the policy's ``min_rows``."""
    for output, rows in job.revealed_rows.items():
        if rows < policy.min_rows:
            raise PolicyError(
                f"{policy.where(job.owner)}: rule min_rows: the {output} revealed to "
                f"{', '.join(map(repr, job.reveal_to)) or 'its receivers'} rests on {rows} pooled rows, "
                f"fewer than {policy.min_rows} (job key reveal_model_to)",
                rule="min_rows",
                subject=output,
                key="reveal_model_to",
            )


# -- columns ------------------------------------------------------------------------------------


def read_hash_key(policy: Policy, owner: str = "this owner", column: str | None = None) -> bytes:
    """The bytes of the policy's ``hash_key_file`` (all of them, a final newline included);
    PolicyError (rule ``hash_key_file``) when absent, unreadable or shorter than 16 bytes."""
    where = f"{policy.where(owner)}: rule hash_key_file"
    if policy.hash_key_file is None:
        raise PolicyError(
            f"{where}: the policy names no hash_key_file", rule="hash_key_file", subject=column, key="id"
        )
    try:
        key = policy.hash_key_file.read_bytes()
    except OSError as e:
        raise PolicyError(
            f"{where}: cannot read the key file {policy.hash_key_file} ({e.strerror})",
            rule="hash_key_file",
            subject=column,
            key="id",
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise PolicyError(
            f"{where}: the key file {policy.hash_key_file} holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}",
            rule="hash_key_file",
            subject=column,
            key="id",
        )
    return key


def _cell_text(v: Any, kind: str) -> str | None:
    if kind == "text":
        return v
    if np.isnan(v):
        return None
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def hash_column(column: Column, key: bytes) -> Column:
    """``column`` as text: each cell's HMAC-SHA256 under ``key``, in hex (64 characters); missing
    cells stay missing. Numbers are hashed as their digits (``12`` for 12.0). The same key and
    value give the same text at every owner, so hashed ids still join."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)  # keyed once, copied per cell

    def mac(text: str | None) -> str | None:
        if text is None:
            return None
        h = keyed.copy()
        h.update(text.encode("utf-8"))
        return h.hexdigest()

    cells = column.values if column.kind == "text" else [_cell_text(v, column.kind) for v in column.values]
    out = np.empty(len(column), dtype=object)
    out[:] = [mac(v) for v in cells]
    return Column(column.name, "text", out)


def generalize_column(column: Column, rule: PiiRule) -> Column:
    """Numbers (and bools) with ``edges``: the bin index ``np.digitize(x, edges)`` (0 below the
    first edge, i where ``edges[i-1] <= x < edges[i]``, ``len(edges)`` from the last edge on),
    missing stays missing. Text with ``prefix``: the first ``prefix`` characters."""
    if rule.edges is not None:
        values = column.values
        out = np.digitize(values, np.asarray(rule.edges)).astype(np.float64)
        out[np.isnan(values)] = np.nan
        return Column(column.name, "number", out)
    n = rule.prefix or 0
    cut = np.array([None if v is None else v[:n] for v in column.values], dtype=object)
    return Column(column.name, "text", cut)


def _kind_problem(rule: PiiRule, kind: str | None) -> str | None:
    if rule.action != "generalize" or kind is None:
        return None
    if rule.edges is not None and kind == "text":
        return (
            "generalize with bin edges needs numbers, and the column holds text: give a number of characters"
        )
    if rule.prefix is not None and kind != "text":
        return f"generalize = {rule.prefix} keeps characters of text, and the column holds {kind}s: give bin edges"
    return None


def plan_columns(
    policy: Policy,
    columns: Table | Sequence[tuple[str, str]],
    job: JobView,
    *,
    sample: int = 2000,
) -> list[ColumnVerdict]:
    """One verdict per source column, refusals included (verdict ``refused``, with ``error``),
    never raising for a column: what :func:`apply_policy` would do, for a dry run.

    ``columns``: the owner's table, or its ``(name, kind)`` pairs in source order (then PII
    detection is skipped: a used column without a ``[pii]`` rule gets the reason
    ``not scanned``). Columns the job does not use are not scanned."""
    table = columns if isinstance(columns, Table) else None
    pairs = [(c.name, c.kind) for c in table.columns] if table is not None else list(columns)
    where = policy.where(job.owner)
    out = []
    for name, kind in pairs:
        out.append(_verdict(policy, job, name, kind, table, sample, where))
    return out


def _verdict(
    policy: Policy, job: JobView, name: str, kind: str, table: Table | None, sample: int, where: str
) -> ColumnVerdict:
    if name == job.id_column:
        role, key, optional = "id", "id", False
    elif name == job.label:
        role, key, optional = "label", "label", False
    elif job.features is None:
        role, key, optional = "feature", "features", True
    elif name in job.features:
        role, key, optional = "feature", "features", False
    else:
        return ColumnVerdict(name, "dropped", "not in features")

    def refuse(rule: str, problem: str, finding: Finding | None = None) -> ColumnVerdict:
        err = PolicyError(
            f"{where}: rule {rule}: {problem} (job key {key})", rule=rule, subject=name, key=key
        )
        return ColumnVerdict(name, "refused", f"rule {rule}: {problem}", role, finding, err)

    as_role = {"id": "the id column", "label": "the label", "feature": "a feature"}[role]
    denied = (
        "deny_columns"
        if name in policy.deny_columns
        else "allow_columns"
        if policy.allow_columns is not None and name not in policy.allow_columns
        else None
    )
    if denied is not None:
        if optional:
            return ColumnVerdict(
                name, "dropped", "deny_columns" if denied == "deny_columns" else "not in allow_columns"
            )
        problem = "is in deny_columns" if denied == "deny_columns" else "is not in allow_columns"
        return refuse(denied, f"the job uses column {name!r} as {as_role}, and it {problem}")
    rule = policy.pii.get(name)
    if rule is not None:
        said = f"([pii] {name} = {rule})"
        if rule.action == "keep":
            return ColumnVerdict(name, role, "pii: keep", role)
        if rule.action == "drop":
            if optional:
                return ColumnVerdict(name, "dropped", "pii: drop")
            return refuse("pii", f"the job uses column {name!r} as {as_role}, and the policy drops it {said}")
        if rule.action == "hash":
            if role == "id":
                try:
                    read_hash_key(policy, job.owner, name)
                except PolicyError as e:
                    return ColumnVerdict(name, "refused", str(e).split(": ", 1)[1], role, None, e)
                return ColumnVerdict(name, "hashed", "pii: hash", role)
            if optional:
                return ColumnVerdict(
                    name, "dropped", "pii: hash (hashed columns join, they are not features)"
                )
            return refuse(
                "pii",
                f"the job uses column {name!r} as {as_role}, and the policy hashes it {said}: "
                "a hashed column can only be the id column",
            )
        if rule.action == "redact":
            if optional:
                return ColumnVerdict(name, "redacted", "pii: redact", None)
            return refuse(
                "pii",
                f"the job uses column {name!r} as {as_role}, and the policy redacts it {said}: "
                "a redacted column holds no values",
            )
        # generalize
        if role == "id":
            return refuse(
                "pii",
                f"the job uses column {name!r} as {as_role}, and the policy generalizes it {said}: "
                "generalized ids would not join",
            )
        problem = _kind_problem(rule, kind)
        if problem is not None:
            return refuse("pii", f"column {name!r}: {said}: {problem}")
        return ColumnVerdict(name, "generalized", "pii: generalize", role)
    if table is None:
        return ColumnVerdict(name, role, "not scanned (no data)", role)
    finding = detect(table[name], sample=sample)
    if finding is None or (role == "id" and finding.kind == "identifiers"):
        return ColumnVerdict(name, role, "allowed", role, finding)
    return refuse(
        "pii",
        f"column {name!r} looks like {finding.kind} ({finding.share:.0%} of {finding.sampled} sampled cells) "
        "and the policy has no [pii] rule for it",
        finding,
    )


def apply_policy(
    policy: Policy, table: Table, job: JobView, *, sample: int = 2000
) -> tuple[Table, list[ColumnVerdict]]:
    """The columns of ``table`` the job may use (id, label, features, in source order) with the
    ``[pii]`` actions applied, and one verdict per source column (:func:`plan_columns`).

    Raises the first refusal (PolicyError), in source order; a declared feature, label or id
    that ``table`` lacks is a DataError naming the table's source and the column."""
    for name in (*(job.features or ()), job.label, *((job.id_column,) if job.id_column else ())):
        _ = table[name]  # DataError naming the source and the column when absent
    verdicts = plan_columns(policy, table, job, sample=sample)
    for v in verdicts:
        if v.error is not None:
            raise v.error
    used = []
    key = None
    for v in verdicts:
        if v.role is None or v.verdict in ("dropped", "redacted"):
            continue
        col = table[v.column]
        if v.verdict == "hashed":
            key = key if key is not None else read_hash_key(policy, job.owner, v.column)
            col = hash_column(col, key)
        elif v.verdict == "generalized":
            col = generalize_column(col, policy.pii[v.column])
        used.append(col)
    return Table(used, table.source), verdicts
