"""Run every party of a job on this machine (``covault train``): :func:`run_local`."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from covault.jobs.dp import result_fields
from covault.jobs.program import job_program
from covault.jobs.progress import BASELINE, progress_display, resolve_mode
from covault.jobs.spec import Job, load_job
from covault.runtime import DEFAULT_DEALER

TRANSPORTS = ("tcp", "local")


def run_local(
    path: str | Path | Job,
    *,
    transport: str = "tcp",
    compare_plaintext: bool = False,
    progress: bool | str = True,
    approvals: bool = False,
) -> dict[str, Any]:
    """Run the job at ``path`` with every party on this machine; the result dict.

    ``transport="tcp"``: one OS process per party over loopback TCP with mutual TLS
    (throw-away certificates; ``[tls] plaintext = true`` turns TLS off); ``"local"``: threads.
    Addresses and certificates in the job file are ignored. ``compare_plaintext`` also trains
    the same model centrally on the pooled plaintext rows (:mod:`covault.jobs.plaintext`).
    ``progress``: True (= ``"auto"``: a bar when stderr is a terminal, else step lines on
    stderr), ``"bar"``, ``"lines"`` or False (:mod:`covault.jobs.progress`). ``approvals``:
    run under approvals and audit as ``covault party`` does (``docs/governance.md``): every
    party needs its approval, signed with its key of the job's ``[tls] certs``, and keeps its
    audit log there.

    Result keys: ``job``, ``task``, ``protocol``, ``partition``, ``transport``, ``label``,
    ``features``, ``parties`` (roles and row counts), ``compute``, ``dealer``,
    ``reveal_model_to``, ``hyperparameters``, ``train_rows``, ``test_rows``, ``metrics``,
    ``loss_curve``, ``diverged``, ``warnings`` (:func:`~covault.jobs.program.job_program`;
    each is also issued as a Python warning here, e.g. ``TrainingDivergedWarning``),
    ``model``, ``model_out``, ``seconds`` (the slowest party's program),
    ``wall_seconds`` (including process start-up), ``phases`` (per step: the slowest compute
    party's seconds (the others mostly wait), bytes sent, rounds and peak memory so far per
    party), ``bytes_sent``, ``bytes_received``, ``rounds`` and ``peak_memory`` (peak resident
    bytes of its process) per party; ``psi`` for vertical jobs
    (``intersection``, ``sizes`` per party, ``seconds``, ``bytes_sent`` per party of the
    alignment); ``plaintext`` with ``compare_plaintext``.
    """
    from covault.runtime import run

    job = path if isinstance(path, Job) else load_job(path)
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be 'tcp' or 'local', got {transport!r}")
    mode = resolve_mode(progress)
    watch = job.compute[0]
    governance = None
    if approvals:
        from covault.jobs.approvals import party_folder

        governance = {p: party_folder(job, p) for p in job.config.names}
    program = job_program(
        job, progress=(watch,) if mode != "off" else False, shared_host=True, governance=governance
    )
    kind = (
        "threads" if transport == "local" else "processes, " + ("no TLS" if job.config.plaintext else "TLS")
    )
    title = (
        f"{job.task} on {len(job.data_parties)} data parties, protocol {job.protocol}, compute "
        f"{', '.join(job.compute)}, transport {transport}"
    )
    start = f"starting {len(job.config.names)} parties ({kind})"
    epochs = job.model.get("epochs")
    with progress_display(mode, watch, title=title, start=start, epochs=epochs) as say:
        t0 = time.perf_counter()
        res = run(
            program,
            parties=list(job.compute),
            protocol=job.protocol,
            provider=job.provider,
            transport=transport,
            frac_bits=job.config.frac_bits,
            timeout=job.config.timeout,
            tls=not job.config.plaintext,
            data_parties=list(job.data_only),
        )
        wall = time.perf_counter() - t0
        if job.dealer and DEFAULT_DEALER in res and job.dealer != DEFAULT_DEALER:
            res[job.dealer] = res.pop(DEFAULT_DEALER)
            res[job.dealer]["party"] = job.dealer
        result = assemble(job, res, transport, wall)
        if compare_plaintext:
            from covault.jobs.plaintext import centralised

            say("training the centralised plaintext baseline", BASELINE)
            result["plaintext"] = centralised(job)
    _warn(result)
    return result


def _stored(job: Job, res: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Where each compute party stored its shares (``model_store``), None without one."""
    here = [p for p in job.compute if p in res]  # every compute party, or one party's own view
    if job.model_store is None or not here:
        return None
    first = res[here[0]]["model_store"]
    return {
        "model": job.model_store,
        "model_id": first["model_id"],
        "files": {p: res[p]["model_store"]["path"] for p in here},
        "bytes": {p: res[p]["model_store"]["bytes"] for p in here},
    }


def assemble(job: Job, res: dict[str, dict[str, Any]], transport: str, wall: float) -> dict[str, Any]:
    """The result dict (see :func:`run_local`) from every party's program result (or from one
    party's alone: that party's view, as ``covault party`` logs it)."""
    first = next((res[p] for p in (*job.reveal_model_to, *job.compute) if p in res), None)
    first = first if first is not None else next(iter(res.values()))  # one party's own view
    schema = first["schema"]
    parties = {}
    for name, r in res.items():
        rows = schema["rows"].get(name, {"train": 0, "test": 0})
        parties[name] = {"roles": r["roles"], "train_rows": rows["train"], "test_rows": rows["test"]}
    steps = list(dict.fromkeys(s for r in res.values() for s in r["phases"]))
    phases = {
        s: {
            "seconds": max(
                r["phases"].get(s, {}).get("seconds", 0.0)
                for c, r in res.items()
                if c in job.compute or len(res) == 1
            ),
            "bytes_sent": {n: r["phases"].get(s, {}).get("bytes_sent", 0) for n, r in res.items()},
            "rounds": {n: r["phases"].get(s, {}).get("rounds", 0) for n, r in res.items()},
            "peak_memory": {n: r["phases"].get(s, {}).get("peak_memory") for n, r in res.items()},
        }
        for s in steps
    }
    return {
        "job": str(job.path) if job.path else None,
        "task": job.task,
        "protocol": job.protocol,
        "partition": job.partition,
        "transport": transport,
        "label": job.label,
        "features": schema["features"],
        "model_inputs": schema.get("model_inputs", schema["features"]),
        "preprocessing": schema.get("preprocessing"),
        "parties": parties,
        "compute": list(job.compute),
        "dealer": job.dealer,
        "reveal_model_to": list(job.reveal_model_to),
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in job.model.items()},
        **_row_totals(job, schema, first.get("psi")),
        "metrics": first["metrics"],
        "loss_curve": first["loss_curve"],
        "diverged": first.get("diverged"),
        "warnings": first.get("warnings", []),
        "model": first["model"],
        "model_out": first["model_path"],
        "model_store": _stored(job, res),
        "seconds": max(r["seconds"] for r in res.values()),
        "wall_seconds": wall,
        "phases": phases,
        "bytes_sent": {n: r["stats"]["bytes_sent"] for n, r in res.items()},
        "bytes_received": {n: r["stats"]["bytes_received"] for n, r in res.items()},
        "rounds": {n: r["stats"]["rounds"] for n, r in res.items()},
        "peak_memory": {n: r.get("peak_memory") for n, r in res.items()},
        **_psi(first, phases),
        **result_fields(first),
    }


def _warn(result: dict[str, Any]) -> None:
    """Issue the warnings of the result (``TrainingDivergedWarning``) in this process."""
    from covault import errors

    for w in result["warnings"]:
        cls = getattr(errors, w["type"], None)
        if not (isinstance(cls, type) and issubclass(cls, errors.CovaultWarning)):
            cls = errors.CovaultWarning
        warnings.warn(w["message"], cls, stacklevel=3)


def _psi(first: dict[str, Any], phases: dict[str, Any]) -> dict[str, Any]:
    """``{"psi": ...}`` for a vertical job (the alignment's sizes, time and traffic), else ``{}``."""
    psi = first.get("psi")
    if not psi:
        return {}
    align = phases.get("align", {})
    return {"psi": {**psi, "seconds": align.get("seconds"), "bytes_sent": align.get("bytes_sent", {})}}


def _row_totals(job, schema, psi) -> dict[str, Any]:
    """``train_rows`` and ``test_rows`` of the pooled sets (vertical jobs: the aligned rows)."""
    if job.partition != "vertical" or psi is None:
        return {
            "train_rows": sum(r["train"] for r in schema["rows"].values()),
            "test_rows": sum(r["test"] for r in schema["rows"].values()),
        }
    return {
        "train_rows": psi["train_rows"],
        "test_rows": psi["test_rows"],
    }
