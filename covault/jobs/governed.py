"""A job under approvals and audit (:func:`run_governed`; ``docs/governance.md``).

1. **Approvals** (one round, before any data is read): every party sends every other its
   signed decision about the job: its approval of this version, else its latest decision about
   another version of the job of the same name, else ``None``. Every party checks every
   party's decision on the same messages, so all raise the same
   :class:`~covault.governance.errors.ApprovalError`, naming each party that has not approved,
   rejected, signed with an invalid certificate or approved another version (with the job
   keys that differ). Parties check certificates against their own copy of the consortium CA.
   A refusal is recorded as ``failed`` and its log heads are countersigned (step 3) before
   the error is raised: every party reached it on the same messages, so all are still there.
2. **Audit**: the party's log records ``started`` (every approval's digest), its input table's
   digest and its policy decisions (data owners), what the job revealed to whom, the bytes
   sent to and received from each peer, and ``finished``, or ``failed`` with the error.
3. **Heads** (two rounds, at the end of a successful or refused job): every party signs its log head and
   sends it to all; every party checks every head and countersigns the others'; the
   countersignatures go to all, are checked by all, and each party keeps the countersignatures
   of its head and the heads it countersigned (:mod:`covault.governance.heads`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from covault.governance.approval import (
    Approval,
    check_approval,
    from_json,
    latest_for_job,
    load_approval,
    save_approval,
)
from covault.governance.audit import AuditLog
from covault.governance.errors import ApprovalError, AuditError, GovernanceError
from covault.governance.fingerprint import JobStatement, array_digest, differing_keys, statement, table_digest
from covault.governance.folder import PartyFolder
from covault.governance.heads import (
    check_countersignature,
    check_head,
    countersign,
    countersignature_from_json,
    head_from_json,
    sign_head,
)
from covault.governance.signing import Identity
from covault.jobs.approvals import record_proposed
from covault.jobs.errors import JobError
from covault.jobs.schema import announce


class Hooks:
    """What the job program tells the audit log while it runs."""

    def __init__(self, log: AuditLog, fingerprint: str, party: str, job=None):
        self.log, self.fingerprint, self.party, self.job = log, fingerprint, party, job

    def prepared(self, rows) -> None:
        """A data owner's prepared rows: the ``input`` digest and its ``policy`` decisions."""
        if hasattr(rows, "table"):  # a horizontal job's OwnerRows
            t = rows.table
            entries = [
                (
                    "input",
                    {
                        "table_sha256": table_digest(t),
                        "source": t.source,
                        "columns": t.names,
                        "train_rows": rows.n_train,
                        "test_rows": rows.n_test,
                    },
                )
            ]
            policy = rows.policy
            verdicts = [
                {"column": v.column, "verdict": v.verdict, "reason": v.reason, "role": v.role}
                for v in rows.verdicts
            ]
            where = None if policy is None or policy.path is None else str(policy.path)
            entries.append(("policy", {"policy": where or "default policy", "columns": verdicts}))
        else:  # a vertical job's VerticalRows
            ids = [*rows.train_ids, *(rows.test_ids or ())]
            values = rows.train if rows.test is None else _concat(rows.train, rows.test)
            entries = [
                (
                    "input",
                    {
                        "table_sha256": array_digest(rows.columns, ids, values),
                        "columns": rows.columns,
                        "train_rows": len(rows.train_ids),
                        "test_rows": len(rows.test_ids or ()),
                    },
                ),
                ("policy", self._vertical_policy(rows)),
            ]
        self.log.append_many([(k, self.fingerprint, p) for k, p in entries])

    def _vertical_policy(self, rows) -> dict[str, Any]:
        """A vertical job's policy decisions: its policy allowed the usage, the regions and
        every column, each used as it is (else the job was refused before this)."""
        policy = None if self.job is None else self.job.policy.get(self.party)
        label = None if self.job is None else self.job.label
        verdicts = [
            {"column": c, "verdict": "label" if c == label else "feature", "reason": "allowed, used as is"}
            for c in rows.columns
        ]
        where = str(policy) if policy else "default policy"
        return {"policy": where, "checks": ["usage", "regions", "columns"], "columns": verdicts}

    def privacy_budget(self, *, epsilon: float, delta: float = 0.0, mechanism: str, **detail: Any) -> None:
        """Record the differential-privacy budget a mechanism of the job spent."""
        self.log.privacy_budget(self.fingerprint, epsilon=epsilon, delta=delta, mechanism=mechanism, **detail)


def _concat(a, b):
    import numpy as np

    return np.concatenate([a, b])


def job_name(job, session, party: str) -> str:
    """The job's name of session party ``party`` (``covault.run`` calls the dealer ``dealer``)."""
    return job.dealer if job.dealer is not None and party == session.dealer else party


def run_governed(
    job, session, folders: Mapping[str, PartyFolder], body: Callable[[Hooks], dict[str, Any]]
) -> dict[str, Any]:
    """``body(hooks)`` (the job program) between the approvals round and the heads rounds, its
    life cycle in this party's audit log (module docstring). ``folders``: each party's folders,
    by job party name (this party's is used)."""
    me = job_name(job, session, session.party)
    folder = folders.get(me)
    if folder is None:
        raise JobError(f"party {me!r} has no governance folder (approvals and audit log)")
    identity, ca = folder.identity(), folder.ca()
    st = statement(job)
    traffic = _Traffic(session)
    with folder.audit(identity) as log:
        record_proposed(job, me, st, log)
        try:
            approvals = exchange_approvals(job, session, folder, ca, st)
        except ApprovalError as exc:
            # every party reached this verdict on the same messages: the refusal is countersigned
            # (best effort: whatever goes wrong there, the refusal is what every party reports)
            _failed(log, st, exc)
            with contextlib.suppress(Exception):
                exchange_heads(job, session, identity, ca, log, st.fingerprint)
            raise
        except BaseException as exc:
            _failed(log, st, exc)
            raise
        try:
            started = {
                "parties": list(job.config.names),
                "approvals": {p: {"sha256": a.sha256(), "time": a.time} for p, a in approvals.items()},
            }
            log.append("started", st.fingerprint, started)
            result = body(Hooks(log, st.fingerprint, me, job))
            log.append_many([(k, st.fingerprint, p) for k, p in _end_entries(job, me, result, traffic)])
            exchange_heads(job, session, identity, ca, log, st.fingerprint)
            return result
        except BaseException as exc:
            _failed(log, st, exc)
            raise


def _failed(log: AuditLog, st: JobStatement, exc: BaseException) -> None:
    """Record ``failed`` with the error's type and message."""
    log.append("failed", st.fingerprint, {"type": type(exc).__name__, "error": str(exc)})


def exchange_approvals(job, session, folder: PartyFolder, ca, st: JobStatement) -> dict[str, Approval]:
    """The approvals round (module docstring, step 1): every party's approval of this version,
    by job party name; ApprovalError naming every party without one."""
    me = job_name(job, session, session.party)
    own = load_approval(folder.state, st.fingerprint, me) or latest_for_job(folder.state, me, st.name)
    got = announce(session, {"approval": None if own is None else own.to_json()})
    problems, named, keys = [], [], set()
    ok: dict[str, Approval] = {}
    other: dict[tuple[str, tuple[str, ...]], list[str]] = {}  # (decision, keys) -> parties
    for sp in session.parties:
        p = job_name(job, session, sp)
        doc = got[sp].get("approval")
        problem = None
        if doc is None:
            problem = f"party {p!r} has not approved this job (run: covault approve JOB --as {p})"
        else:
            try:
                a = from_json(doc, f"the approval of party {p!r}")
            except GovernanceError as exc:
                a, problem = None, str(exc)
            bad = None if a is None else check_approval(a, ca, p)
            if a is None:
                pass
            elif bad is not None:
                problem = f"the approval of party {p!r} is invalid: {bad}"
            elif a.fingerprint != st.fingerprint:
                diff = differing_keys(a.parts, st.parts)
                keys.update(diff)
                other.setdefault((a.decision, tuple(diff)), []).append(p)
                named.append(p)
                continue
            elif not a.approved:
                problem = f"party {p!r} rejected this job" + (f": {a.reason}" if a.reason else "")
            else:
                ok[p] = a
        if problem is not None:
            problems.append(problem)
            named.append(p)
    for (decision, diff), parties in other.items():
        who = f"party {parties[0]!r}" if len(parties) == 1 else "parties " + ", ".join(map(repr, parties))
        problems.append(
            f"{who} {decision} another version of this job, not this one; keys that differ: "
            + (", ".join(diff) or "none, but the fingerprints differ")
        )
    if problems:
        raise ApprovalError(
            f"the job was not approved by every party: {'; '.join(problems)}",
            parties=tuple(named),
            keys=tuple(sorted(keys)),
        )
    for p, a in ok.items():
        if p != me:
            save_approval(folder.state, a, peer=True)
    return ok


def exchange_heads(job, session, identity: Identity, ca, log: AuditLog, fingerprint: str) -> None:
    """The heads rounds (module docstring, step 3); AuditError at every party, naming the party,
    if a head or a countersignature is invalid."""
    seq, hash_ = log.head()
    mine = sign_head(identity, seq, hash_, fingerprint)
    got = announce(session, {"head": asdict(mine)})
    heads = {}
    for sp in session.parties:
        p = job_name(job, session, sp)
        try:
            head = head_from_json(got[sp].get("head"), f"the log head of party {p!r}")
        except GovernanceError as exc:
            raise AuditError(str(exc)) from None
        problem = "it names another party" if head.party != p else check_head(head, ca)
        if problem is not None:
            raise AuditError(f"the signed log head of party {p!r} is invalid: {problem}")
        heads[p] = head
    made = {p: countersign(identity, h).to_json() for p, h in heads.items() if p != identity.party}
    got = announce(session, {"countersignatures": made})
    keep = []
    for sp in session.parties:
        w = job_name(job, session, sp)
        signed = got[sp].get("countersignatures")
        if not isinstance(signed, dict) or set(signed) != set(heads) - {w}:
            raise AuditError(f"party {w!r} did not countersign every other party's log head")
        for p, doc in signed.items():
            try:
                c = countersignature_from_json(doc, f"the countersignature of party {w!r}")
            except GovernanceError as exc:
                raise AuditError(str(exc)) from None
            problem = check_countersignature(c, ca)
            if problem is None and (c.witness != w or c.head != heads[p]):
                problem = "it countersigns another head, or names another witness"
            if problem is not None:
                raise AuditError(
                    f"the countersignature by party {w!r} of the head of {p!r} is invalid: {problem}"
                )
            if identity.party in (p, w):
                keep.append(c)
    log.add_countersignatures(keep)
    witnesses = sorted(c.witness for c in keep if c.head.party == identity.party)
    log.append("countersigned", fingerprint, {"seq": seq, "hash": hash_, "witnesses": witnesses})


class _Traffic:
    """Bytes and messages this party sends to and receives from each peer (from now on)."""

    def __init__(self, session):
        self.session = session
        self.peers = {p: [0, 0, 0, 0] for p in session.parties if p != session.party}
        session.net.add_recorder(self)

    def __call__(self, direction: str, peer: str, message) -> None:
        row = self.peers[peer]
        i = 0 if direction == "sent" else 2
        row[i] += sum(int(a.nbytes) for a in message)
        row[i + 1] += 1

    def to_json(self, job, session) -> dict[str, Any]:
        return {
            job_name(job, session, p): {
                "bytes_sent": r[0],
                "messages_sent": r[1],
                "bytes_received": r[2],
                "messages_received": r[3],
            }
            for p, r in self.peers.items()
        }


def _end_entries(job, me: str, result: dict[str, Any], traffic: _Traffic) -> list[tuple[str, Any]]:
    """``revealed``, ``traffic`` and ``finished`` payloads of a completed job."""
    import hashlib

    from covault.governance.signing import canonical

    model = result.get("model")
    finished = {
        "roles": result.get("roles"),
        "seconds": result.get("seconds"),
        "model_sha256": None if model is None else hashlib.sha256(canonical(model)).hexdigest(),
        "model_path": result.get("model_path"),
    }
    return [
        ("revealed", {"reveals": reveals(job, result)}),
        ("traffic", {"peers": traffic.to_json(job, traffic.session), "totals": result.get("stats")}),
        ("finished", finished),
    ]


def reveals(job, result: dict[str, Any]) -> list[dict[str, Any]]:
    """What the job opened, to whom, with shapes (the same at every party: the program and the
    shapes are public)."""
    every = "every party"
    schema = result.get("schema") or {}
    inputs = len(schema.get("model_inputs") or schema.get("features") or ())
    owners = list(job.data_parties)
    out = [
        {
            "what": "each data owner's column names and kinds, row counts and min_rows",
            "to": every,
            "shape": [len(owners)],
        },
        {"what": "the job's fingerprint", "to": every, "shape": [1]},
    ]
    if job.partition == "vertical":
        out.append(
            {
                "what": "the number of ids of each data party and of common ids",
                "to": every,
                "shape": [len(owners) + 1],
            }
        )
        out.append(
            {"what": "the common ids", "to": owners, "shape": [result.get("psi", {}).get("intersection")]}
        )
    else:
        out.append(
            {"what": "per number column: the power of two above the pooled maximum magnitude; pooled sums and "
             "counts of mean-imputed columns", "to": every, "shape": [len(schema.get("features") or ())]}
        )  # fmt: skip
    if job.kind == "classification":
        splits = 2 if job.n_classes == 2 else 1
        out.append({"what": "every class occurs (one bit per split)", "to": every, "shape": [splits]})
    to = list(job.reveal_model_to)
    if job.task == "mlp":
        widths = [inputs, *(int(h) for h in job.model.get("hidden", ())), int(job.n_classes or 2)]
        shapes = {
            "coefs": [[a, b] for a, b in itertools.pairwise(widths)],
            "intercepts": [[b] for b in widths[1:]],
        }
    else:
        shapes = {"coef": [inputs], "intercept": []}
    out.append({"what": "the model's weights", "to": to, "shape": shapes})
    metrics = ["r2", "rmse"] if job.kind == "regression" else ["accuracy"]
    if job.kind == "classification" and job.n_classes == 2:
        metrics += ["auc", "pr_auc", "precision", "recall", "f1"]
    out.append({"what": "held-out metrics: " + ", ".join(metrics), "to": to, "shape": [len(metrics)]})
    out.append(
        {
            "what": "the mean training loss after each epoch",
            "to": to,
            "shape": [int(job.model.get("epochs", 0))],
        }
    )
    return out
