"""A dry run of a job at one party (``covault plan JOB --as NAME``), without contacting peers.

For a data owner it reads the owner's table and policy as the job would and reports every
column's verdict under the policy (feature, label, dropped, hashed, generalized, redacted or
refused, with the reason and what a PII-looking column looks like), the usage rules the job
breaks (task, receivers, regions, share holders), the transforms of each feature, the rows it
would hold out, what it would send to whom (the shares of its rows and its part of the pooled
statistics, with sizes) and what every party would learn. Nothing leaves the host; a refusal
is reported, not raised.
"""

from __future__ import annotations

from typing import Any

from covault import schemes
from covault.ingest.policy import plan_columns, usage_refusals
from covault.ingest.transforms import NONE, output_names
from covault.jobs.budget import plan_entry
from covault.jobs.errors import JobError
from covault.jobs.owner import job_view, owner_policy, prepare_owner

VALUE_BYTES = 8  # one ring element


def plan(job, party: str) -> dict[str, Any]:
    """The dry run of ``job`` at ``party`` (module docstring), JSON-ready."""
    from covault.jobs.spec import roles

    if party not in job.config.parties:
        raise JobError(f"party {party!r} is not in the job (parties: {sorted(job.config.parties)})")
    out: dict[str, Any] = {
        "party": party,
        "roles": roles(job, party),
        "job": job.fingerprint(),
        "task": job.task,
        "protocol": job.protocol,
        "compute": list(job.compute),
        "reveal_model_to": list(job.reveal_model_to),
        "refusals": [],
        "errors": [],
        "columns": [],
        "sends": [],
        "learns": learns(job, party),
    }
    if party not in job.data_parties:
        return out
    policy = owner_policy(job, party)
    out["policy"] = str(policy.path) if policy.path is not None else "default (no policy file)"
    view = job_view(job, party)
    out["refusals"] = [_refusal(e) for e in usage_refusals(policy, view)]
    source = job.data.get(party)
    if source is None:
        out["errors"].append(f"party {party!r} has no data source: give --local FILE")
        return out
    from covault.ingest.connectors import describe, read_table

    out["source"] = describe(source)
    try:
        table = read_table(source)
    except Exception as exc:  # reported, not raised: the plan shows every problem it can
        out["errors"].append(str(exc))
        return out
    for v in plan_columns(policy, table, view):
        row = {"column": v.column, "verdict": v.verdict, "reason": v.reason}
        if v.finding is not None:
            row["looks_like"] = v.finding.kind
        if v.error is not None:
            out["refusals"].append(_refusal(v.error))
        out["columns"].append(row)
    try:
        rows = prepare_owner(job, party)
    except JobError as exc:
        if not out["refusals"]:
            out["errors"].append(str(exc))
        return out
    kinds = dict(rows.kinds)
    features = list(job.features) if job.features is not None else rows.features
    out["features"] = [
        {
            "column": f,
            "kind": kinds.get(f),
            "transform": job.transforms.get(f, NONE).to_json(),
            "missing": int(rows.table[f].missing.sum()) if f in rows.table else None,
        }
        for f in features
    ]
    try:
        inputs = output_names(features, job.transforms, kinds)
    except Exception as exc:
        out["errors"].append(str(exc))
        return out
    out["rows"] = {"train": rows.n_train, "test": rows.n_test}
    budget = plan_entry(job, party, policy, rows)
    if budget is not None:
        out["privacy_budget"] = budget
        if "refusal" in budget:
            refusal = {"rule": "privacy.max_epsilon", "subject": party, "key": "privacy"}
            out["refusals"].append(refusal | {"message": f"{party} refused the job: {budget['refusal']}"})
    out["model_inputs"] = inputs
    out["sends"] = sends(job, party, rows.n_train + rows.n_test, len(inputs), features, kinds)
    return out


def _refusal(exc) -> dict[str, Any]:
    return {"rule": exc.rule, "subject": exc.subject, "key": exc.key, "message": str(exc)}


def sends(job, party: str, n_rows: int, width: int, features, kinds) -> list[dict[str, Any]]:
    """What data owner ``party`` sends, to whom, and how large (shares at 8 bytes per component)."""
    components = schemes.get(job.protocol).components
    values = n_rows * (width + 1)
    numeric = sum(1 for f in features if kinds.get(f) == "number")
    means = sum(1 for f in features if job.transforms.get(f, NONE).impute == "mean")
    out = [
        {
            "what": "its columns' names and kinds, its numbers of training and held-out rows, its min_rows",
            "to": "every party",
            "bytes": None,
        },
        {
            "what": f"exponents of {numeric + means} columns (secret-shared integers)",
            "to": list(job.compute),
            "bytes": (numeric + means) * VALUE_BYTES * components * len(job.compute),
        },
    ]
    if means:
        out.append(
            {
                "what": f"sum and count of the non-missing cells of {means} columns (secret-shared)",
                "to": list(job.compute),
                "bytes": 2 * means * VALUE_BYTES * components * len(job.compute),
            }
        )
    out.append(
        {
            "what": f"shares of {n_rows} rows x {width + 1} values (model inputs and label)",
            "to": list(job.compute),
            "bytes": values * VALUE_BYTES * components * len(job.compute),
        }
    )
    return out


def learns(job, party: str) -> list[dict[str, Any]]:
    """What is revealed, and to whom (the same at every party)."""
    every = "every party"
    out = [
        {"what": "each data owner's column names and kinds, row counts and min_rows", "to": every},
        {"what": "the job's fingerprint", "to": every},
        {"what": "per number column: the power of two above the pooled maximum magnitude", "to": every},
        {
            "what": 'per column with impute = "mean": the pooled sum and count of non-missing cells',
            "to": every,
        },
        {"what": "one bit per split: every class occurs (classification)", "to": every},
        {"what": "the model, its held-out metrics and the loss per epoch", "to": list(job.reveal_model_to)},
    ]
    if job.model_store is not None:
        what = f"each its own shares of the model (uniformly random), kept encrypted at rest as {job.model_store!r}"
        out.append({"what": what, "to": list(job.compute)})
    for row in out:
        row["this_party"] = row["to"] == every or party in row["to"]
    return out


def format_plan(p: dict[str, Any]) -> str:
    """The plan as text."""
    lines = [
        f"plan of party {p['party']} ({', '.join(p['roles']) or 'no role'}): {p['task']}, protocol "
        f"{p['protocol']}, compute {', '.join(p['compute'])}; nothing was sent"
    ]
    if "policy" in p:
        lines.append(f"policy: {p['policy']}; data: {p.get('source', '?')}")
    if p["columns"]:
        lines.append("columns:")
        for c in p["columns"]:
            extra = f" (looks like {c['looks_like']})" if "looks_like" in c else ""
            lines.append(f"  {c['column']:<24} {c['verdict']:<12} {c['reason']}{extra}")
    for f in p.get("features", []):
        t = {k: v for k, v in f["transform"].items() if v not in (None, False)}
        scale = "; auto scale" if f["kind"] == "number" else ""
        lines.append(f"  feature {f['column']} ({f['kind']}, {f['missing']} missing): {t or 'as is'}{scale}")
    if "rows" in p:
        lines.append(f"rows: {p['rows']['train']} training, {p['rows']['test']} held out")
    if "privacy_budget" in p:
        b = p["privacy_budget"]
        cap = "no cap" if b["cap"] is None else f"cap {b['cap']:g}, remaining {b['remaining']:g}"
        job_eps = b["job_epsilon"] if isinstance(b["job_epsilon"], str) else f"{b['job_epsilon']:g}"
        lines.append(
            f"privacy budget ({b['ledger']}): spent {b['spent']:g}, {cap}; this job: local DP "
            f"{b['local_epsilon']:g} + DP-SGD {job_eps}"
        )
    for s in p["sends"]:
        size = "" if s["bytes"] is None else f" ({s['bytes'] / 1e6:.3f} MB)"
        to = s["to"] if isinstance(s["to"], str) else ", ".join(s["to"])
        lines.append(f"sends {s['what']} to {to}{size}")
    for r in p["learns"]:
        to = r["to"] if isinstance(r["to"], str) else ", ".join(r["to"]) or "nobody"
        lines.append(f"revealed to {to}: {r['what']}")
    for r in p["refusals"]:
        lines.append(f"REFUSED: {r['message']}")
    for e in p["errors"]:
        lines.append(f"ERROR: {e}")
    if not p["refusals"] and not p["errors"]:
        lines.append("verdict: this party would take part")
    return "\n".join(lines)
