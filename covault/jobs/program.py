"""The program every party of a job runs (SPMD): :func:`job_program`.

1. **Prepare** (local, nothing sent): a data party loads and validates its rows and splits off
   its held-out rows (:mod:`covault.jobs.data`); a model receiver checks that it can write
   ``model_out`` (``onnx`` installed, folder writable).
2. **Agree** (one round, :mod:`covault.jobs.schema`): column names, row counts and the job's
   fingerprint are exchanged in the clear; every party raises the same error on a mismatch.
3. **Input**: each data party secret-shares ``[features | label]`` of its training rows and
   the labels of its held-out rows (one ``session.input`` per ``INPUT_ROWS`` rows), written
   straight into the pooled sets (allocated once); it keeps only the transformed features of
   its held-out rows, shared after training (step ``held_out``), so that the training peak
   holds neither its table nor the held-out shares. Vertical jobs (``partition = "vertical"``) first **align** the
   rows by a private set intersection of the ids (:mod:`covault.jobs.align`); then each data
   party shares its columns of the common rows and the column blocks are joined
   (``ml.concat_cols``), the label coming from the one party that holds it.
4. **Class check** (classification): the per-class counts of the pooled labels stay secret;
   one bit per set, "every class is present", is opened to every party (training rows, and
   for binary tasks the held-out rows too, since AUC needs both classes).
5. **Train** the task's estimator with the job's hyper-parameters, keeping the mean training
   loss after every epoch (secret).
6. **Evaluate** on the pooled held-out rows (accuracy and AUC, or R² and RMSE) and **reveal**
   the metrics, the loss curve and the model to ``reveal_model_to`` only; receivers write the
   ONNX model to ``model_out`` (on a shared host, where they would all write the same file,
   the first receiver alone).
   With ``model_store`` each compute party then stores its shares of the model, encrypted at
   rest (:mod:`covault.jobs.store`); ``reveal_model_to = []`` reveals nothing at all.

Public: the metadata of step 2 (for vertical jobs also every party's number of ids and the
size of the intersection; the common ids are learned by the data parties only), the bits of step 4, and (to the receivers only) the metrics,
the per-epoch losses and the model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from covault import ring
from covault.jobs import dp
from covault.jobs.align import align
from covault.jobs.budget import admit as admit_budget
from covault.jobs.budget import announce as announce_budget
from covault.jobs.data import VerticalRows, load_vertical_rows
from covault.jobs.errors import JobError, RefusedError
from covault.jobs.memory import check_memory, memory_status
from covault.jobs.model import model_to_dict
from covault.jobs.owner import OwnerRows, check_owner_usage, prepare_owner, secure_preprocessing
from covault.jobs.schema import Schema, agree, agree_vertical, announce
from covault.jobs.spec import roles


def job_program(
    job, *, progress: bool | Iterable[str] = False, shared_host: bool = False, governance=None
) -> Callable[[Any], dict[str, Any]]:
    """The picklable program ``program(session) -> dict`` of ``job`` (module docstring).

    ``progress``: print one line per step to stderr (True: at every party; a list of party
    names: at those only). Returns, at every party: ``party``, ``roles``, ``schema``,
    ``metrics``, ``loss_curve``, ``model`` (JSON-ready weights) and ``model_path`` (None except
    at receivers; with ``shared_host``, except at the first receiver), ``diverged`` (whether the revealed loss curve shows that training diverged,
    :func:`covault.ml.linear.loss_divergence`; None except at receivers), ``warnings`` (a list
    of ``{"type", "message"}``: ``TrainingDivergedWarning`` when diverged), ``seconds``,
    ``phases`` (seconds, bytes sent, rounds and peak memory so far per step), ``peak_memory``
    (bytes, :func:`peak_memory`) and ``stats``. ``shared_host``: every
    party runs on this host (:func:`covault.jobs.run_local`), so the memory check of MLP jobs
    (:mod:`covault.jobs.memory`) counts the parties holding shares together. ``governance``:
    ``{party: PartyFolder}`` runs the job under approvals and audit
    (:func:`covault.jobs.governed.run_governed`; ``docs/governance.md``).
    """
    if not isinstance(progress, bool):
        progress = tuple(progress)
    return functools.partial(
        run_job_party, job, progress=progress, shared_host=shared_host, governance=governance
    )


class _Steps:
    """Wall time, bytes sent and rounds of each step of this party."""

    def __init__(self, session):
        self.session, self.out = session, {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        with self.session.scope() as cost:
            yield
        self.out[name] = {
            "seconds": time.perf_counter() - t0,
            "bytes_sent": cost.bytes_sent,
            "rounds": cost.rounds,
            "peak_memory": peak_memory(),
        }


def _speaker(party: str, progress: bool | tuple[str, ...]) -> Callable[[str], None]:
    on = progress is True or (not isinstance(progress, bool) and party in progress)

    def say(msg: str) -> None:
        if on:
            print(f"[{party}] {msg}", file=sys.stderr, flush=True)

    return say


def _check_session(job, session) -> None:
    if session.protocol_name != job.protocol:
        raise JobError(
            f"the session runs {session.protocol_name!r} but the job says protocol = {job.protocol!r}"
        )
    if tuple(session.compute_parties) != tuple(job.compute):
        raise JobError(
            f"the session's compute parties {list(session.compute_parties)} are not the job's "
            f"compute parties {list(job.compute)}"
        )
    if session.frac_bits != job.config.frac_bits:
        raise JobError(
            f"the session uses {session.frac_bits} fractional bits, the job {job.config.frac_bits}"
        )
    missing = [p for p in job.data_parties if p not in session.parties]
    if missing:
        raise JobError(f"data parties {missing} of the job are not part of this session")


def run_job_party(
    job, session, *, progress: bool | tuple[str, ...] = False, shared_host: bool = False, governance=None
) -> dict[str, Any]:
    """Party ``session.party``'s side of ``job`` (see :func:`job_program`)."""
    if governance is not None:
        from covault.jobs.governed import run_governed

        body = functools.partial(_run_job_party, job, session, progress, shared_host)
        return run_governed(job, session, governance, body)
    return _run_job_party(job, session, progress, shared_host, None)


def _run_job_party(job, session, progress, shared_host: bool, hooks) -> dict[str, Any]:
    """:func:`run_job_party`; ``hooks`` (:class:`covault.jobs.governed.Hooks`) hears of the
    owner's prepared rows."""
    start = time.perf_counter()
    me = session.party
    say = _speaker(me, progress)
    steps = _Steps(session)
    _check_session(job, session)
    receiver = me in job.reveal_model_to
    to = list(job.reveal_model_to)
    # the ONNX file is written by every receiver, except on a shared host: there all write the
    # same path, so the first receiver alone writes it (importing onnx costs ~1 s of CPU each)
    writer = receiver and job.model_out is not None and (not shared_host or me == to[0])
    vertical = job.partition == "vertical"

    # 1. prepare
    rows: OwnerRows | VerticalRows | None = None
    status: dict[str, Any] = {"job": job.fingerprint()}
    local_error: JobError | None = None
    with steps("prepare"):
        try:
            if me in job.data_parties and vertical:
                check_owner_usage(job, me)  # usage and regions; column rules: horizontal jobs
                rows = load_vertical_rows(job, me)
                status.update(
                    columns=rows.columns, train_rows=len(rows.train_ids), test_rows=len(rows.test_ids or ())
                )
            elif me in job.data_parties:
                rows = prepare_owner(job, me)
                status.update(rows.status())
                status.update(announce_budget(rows.policy, me, rows))  # docs/privacy.md
            if (me in job.compute or me == job.dealer) and job.task == "mlp":
                ring.load_matmul_engine()  # matrix products; linear models' are matrix-vector (numpy)
            if writer:
                from covault.jobs.onnx_export import require_onnx

                require_onnx(load=False)  # imported when the model is written
                _check_writable(job.model_out)
        except JobError as exc:
            local_error = exc
            named = str(exc).startswith(("party ", f"{me} refused"))
            status["error"] = str(exc) if named else f"party {me!r}: {exc}"
            status["error_type"] = type(exc).__name__
        status.update(memory_status(job, session))
    if hooks is not None and rows is not None:
        hooks.prepared(rows)  # the input digest and policy decisions, in this party's audit log

    # 2. agree
    with steps("schema"):
        statuses = announce(session, status)
    if local_error is not None:  # the same message every other party raises
        if isinstance(local_error, RefusedError):
            raise local_error
        raise type(local_error)(status["error"]) from None
    psi = None
    pre = None  # the fitted transforms (horizontal jobs)
    if vertical:
        vschema = agree_vertical(job, statuses, me)
        most = min(sum(vschema.id_counts[p]) for p in job.data_parties)  # rows after the intersection
        check_memory(job, session, statuses, len(vschema.features), most, most, shared_host=shared_host)
        say(
            f"schema agreed: {len(job.data_parties)} data parties, {len(vschema.features)} features, "
            f"label at {vschema.label_party!r}"
        )
        with steps("align"):
            alignment = align(job, session, rows)
        say(
            f"rows aligned by private set intersection: {alignment.intersection} common ids "
            f"(sets {alignment.sizes}; {steps.out['align']['seconds']:.2f} s)"
        )
        psi = {
            "intersection": alignment.intersection,
            "sizes": alignment.sizes,
            "train_rows": alignment.train_rows,
            "test_rows": alignment.test_rows,
        }
        counts = {p: alignment.train_rows for p in job.data_parties}
        tcounts = {p: alignment.test_rows for p in job.data_parties}
        schema = Schema(vschema.features, job.label, counts, tcounts)
        with steps("input"):
            x_tr, y_tr, x_te, y_te = _share_columns(job, session, vschema, alignment, rows)
    else:
        schema = agree(job, statuses, me)
        admit_budget(job, statuses, schema.n_train, me, rows.policy if rows is not None else None, hooks)
        n_rows, at_once = schema.n_train + schema.n_test, max(schema.n_train, schema.n_test)
        check_memory(job, session, statuses, len(schema.features), n_rows, at_once, shared_host=shared_host)
        say(
            f"schema agreed: {len(job.data_parties)} data parties, {schema.n_train} training and "
            f"{schema.n_test} held-out rows, {len(schema.features)} features"
        )
        with steps("statistics"):
            pre = secure_preprocessing(session, job, schema, rows)
        say(f"transforms fitted: {len(pre.outputs)} model inputs from {len(schema.features)} features")
        # 3. input: the training rows and the held-out labels; the held-out features after training
        with steps("input"):
            x_tr, y_tr, y_te = _share_rows(job, session, schema, pre, rows)
        x_te = None
        rows = _held_out(pre, rows)  # of the owner's table only the held-out features remain
    say(f"rows secret-shared ({steps.out['input']['seconds']:.2f} s)")
    model_inputs = list(schema.features) if pre is None else list(pre.outputs)

    # 4. class check
    if job.kind == "classification":
        with steps("class_check"):
            _check_classes(job, session, y_tr, y_te)

    # 5. train
    est = job.estimator()
    with steps("train"):
        train = [x_tr, y_tr]
        del x_tr, y_tr  # fit holds the only references: it may overwrite them (shuffle in place)
        own = {} if job.task == "mlp" else {"overwrite": True}  # linear models shuffle in place
        private = dp.job_dpsgd(job)
        if private is not None:
            own["privacy"] = private  # DP-SGD: no loss curve (an unaccounted release)
        est.fit(
            train.pop(0),
            train.pop(0),
            track_loss=private is None,
            on_epoch=lambda k: say(f"epoch {k}/{est.epochs}"),
            **own,
        )
    say(f"trained {est.epochs} epochs ({steps.out['train']['seconds']:.2f} s)")

    if x_te is None:  # held-out features shared now: the training peak holds no copy of them
        with steps("held_out"):
            x_te = _share_held_out(job, session, schema, len(pre.outputs), rows)
        rows = None

    # 6. evaluate, reveal, export
    with steps("evaluate"):  # reveal_model_to = []: nothing is revealed (a stored secret model)
        metrics = secure_metrics(job, est, x_te, y_te, to) if to else None
    with steps("reveal"):
        curve = est.loss_curve_.reveal(to) if to and est.loss_curve_ is not None else None
        public = est.reveal(to) if to else None
    stored = None
    if job.model_store is not None:
        from covault.jobs.store import store_trained

        with steps("store"):
            stored = store_trained(job, session, est, model_inputs, pre)
        say(f"model {job.model_store!r} stored secret-shared ({stored['path'] or 'no shares here'})")
    warned = []
    if curve is not None:
        from covault.ml.linear import loss_divergence

        reason = loss_divergence(est, curve)
        if reason is not None:
            warned.append({"type": "TrainingDivergedWarning", "message": reason})
    weights = model_to_dict(public) if public is not None else None
    model_path = None
    if weights is not None and writer:
        with steps("export"):
            from covault.jobs.onnx_export import write_onnx

            model_path = str(
                write_onnx(job.task, weights, model_inputs, job.label, job.model_out, preprocessing=pre)
            )
        say(f"model written to {model_path}")
    if metrics is not None:
        say("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None))
    return {
        "party": me,
        "roles": roles(job, me, session.dealer),
        "schema": {
            "features": schema.features,
            "model_inputs": model_inputs,
            "preprocessing": None if pre is None else pre.to_json(),
            "label": schema.label,
            "partition": job.partition,
            "rows": {
                p: {"train": schema.train_rows[p], "test": schema.test_rows[p]} for p in job.data_parties
            },
        },
        "psi": psi,
        "privacy": getattr(est, "privacy_", None),
        "metrics": metrics,
        "loss_curve": None if curve is None else [float(v) for v in np.asarray(curve).reshape(-1)],
        "diverged": None if curve is None else bool(warned),
        "warnings": warned,
        "model": weights,
        "model_path": model_path,
        "model_store": stored,
        "seconds": time.perf_counter() - start,
        "peak_memory": peak_memory(),
        "phases": steps.out,
        "stats": session.stats.as_dict(),
    }


def peak_memory() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` of ``/proc/self/status`` on
    Linux (``ru_maxrss`` there also counts the parent's memory at the fork before ``exec``),
    else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def _check_writable(path) -> None:
    """Fail before the computation if ``model_out`` cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"model_out {path}: cannot create its folder: {exc.strerror}") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise JobError(f"model_out {path} is not a writable file path")


INPUT_ROWS = 1 << 16  # an owner secret-shares at most this many rows per input (two rounds each)


def _share_rows(job, session, schema: Schema, pre, rows: OwnerRows | None):
    """Secret shares ``(x_train, y_train, y_held_out)``: each data owner shares ``[features |
    label]`` of its training rows, then the labels of its held-out rows
    (:func:`_share_pooled`)."""
    d = len(pre.outputs)
    train = {p: (0, schema.train_rows[p]) for p in job.data_parties}
    test = {p: (schema.train_rows[p], schema.train_rows[p] + schema.test_rows[p]) for p in job.data_parties}
    x_tr, y_tr = _share_pooled(
        job,
        session,
        train,
        d + 1,
        lambda lo, hi: dp.check_features(job, session.party, _owner_block(pre, rows, lo, hi), d),
        [slice(0, d), d],
    )
    x_tr = dp.bound_features(job, x_tr)
    (y_te,) = _share_pooled(job, session, test, 1, lambda lo, hi: rows.y[lo:hi, None], [0])
    return x_tr, y_tr, y_te


def _share_held_out(job, session, schema: Schema, d: int, x: np.ndarray | None):
    """Secret shares of the ``d`` features of every owner's held-out rows (``x``: this owner's,
    :func:`_held_out`)."""
    spans = {p: (0, schema.test_rows[p]) for p in job.data_parties}
    (x_te,) = _share_pooled(job, session, spans, d, lambda lo, hi: x[lo:hi], [slice(0, d)])
    return x_te


def _share_pooled(job, session, spans: dict[str, tuple[int, int]], width: int, value, cuts) -> list:
    """Each data owner ``p`` secret-shares ``value(lo, hi)`` (float64 ``(hi - lo, width)``, at
    ``p`` only) for its rows ``spans[p]``, ``INPUT_ROWS`` rows per input; every block is written
    straight into pooled share arrays allocated once, one per entry of ``cuts`` (a column
    slice: a matrix; a column index: a vector): no per-owner slices, no concatenated copies,
    and the owner's encoding temporaries stay block-sized."""
    n = sum(hi - lo for lo, hi in spans.values())
    pooled: list[np.ndarray] = []  # allocated at the first block
    like = None  # the first block's tensor: frac and bound of every block
    at = 0  # next free pooled row
    for p in job.data_parties:
        first, last = spans[p]
        for start in range(first, last, INPUT_ROWS):
            stop = min(start + INPUT_ROWS, last)
            m = session.input(value(start, stop) if p == session.party else None, owner=p)
            if m.shape != (stop - start, width):
                raise JobError(
                    f"party {p!r} shared rows {start}:{stop} of shape {m.shape}, announced "
                    f"{(stop - start, width)}"
                )
            if like is None:
                like = m
                k, dt = m.shares.shape[0], m.shares.dtype
                for c in cuts:
                    cols = () if isinstance(c, int) else (c.stop - c.start,)
                    pooled.append(np.empty((k, n, *cols), dt))
            for out, c in zip(pooled, cuts):
                out[:, at : at + stop - start] = m.shares[:, :, c]
            at += stop - start
            del m
    if like is None:
        raise JobError("no data party shared any row")
    return [like._new(a, like.frac, like.bound) for a in pooled]


def _held_out(pre, rows: OwnerRows | None) -> np.ndarray | None:
    """The transformed features (float64) of this owner's held-out rows, None elsewhere: all
    that remains of its table until they are shared after training."""
    if rows is None:
        return None
    return _owner_block(pre, rows, rows.n_train, rows.n_train + rows.n_test, label=False)


def _owner_block(pre, rows: OwnerRows, start: int, stop: int, label: bool = True) -> np.ndarray:
    """``[features | label]`` (``label=False``: the features) of the owner's rows
    ``start:stop`` (float64)."""
    from covault.ingest.errors import DataError
    from covault.ingest.table import Column, Table

    t = rows.table
    part = Table([Column(c.name, c.kind, c.values[start:stop]) for c in t.columns], t.source)
    try:
        x = pre.apply(part)
    except DataError:
        pre.apply(t)  # the message names the row of the whole table
        raise
    if not label:
        return x
    out = np.empty((stop - start, x.shape[1] + 1), np.float64)
    out[:, :-1] = x
    out[:, -1] = rows.y[start:stop]
    return out


def _share_columns(job, session, vschema, alignment, rows):
    """Each data party secret-shares its aligned columns (training rows, then held-out rows);
    the blocks are joined in job order (``ml.concat_cols``); the label comes from its owner."""
    from covault import ml

    ntr, nte = alignment.train_rows, alignment.test_rows
    blocks, y = [], None
    for p in job.data_parties:
        width = len(vschema.owners[p]) + (p == vschema.label_party)
        value = None
        if p == session.party:
            value = np.concatenate([rows.rows(alignment.train_index), rows.rows(alignment.test_index)])
            if rows.has_label:  # label last, features in file order
                li = rows.columns.index(job.label)
                value = np.column_stack([np.delete(value, li, axis=1), value[:, li]])
        m = session.input(value, owner=p)
        if m.shape != (ntr + nte, width):
            raise JobError(f"party {p!r} shared a table of shape {m.shape}, announced {(ntr + nte, width)}")
        if p == vschema.label_party:
            y = m[:, width - 1]
            m = m[:, : width - 1]
        if m.shape[1]:
            blocks.append(m)
    x = ml.concat_cols(blocks)
    return x[:ntr], y[:ntr], x[ntr:], y[ntr:]


def _check_classes(job, session, y_tr, y_te) -> None:
    """Open one bit per set to every party: does every class occur (module docstring)?"""
    from covault.ml import one_hot
    from covault.ml.metrics import as_integer
    from covault.ops import compare
    from covault.tensor import concatenate, stack

    k = job.n_classes
    sets = [("training", y_tr)] + ([("held-out", y_te)] if k == 2 else [])
    counts = []
    for _, y in sets:
        yi = as_integer(y)
        if k == 2:
            pos = yi.sum()
            counts.append(stack([len(yi) - pos, pos]))
        else:
            counts.append(one_hot(yi, k).sum(axis=0))
    present = compare.greater_than(concatenate(counts), 0).reshape(len(sets), k).sum(axis=1)
    ok = compare.equal(present, k).reveal(list(session.parties))
    for (what, _), good in zip(sets, np.asarray(ok).reshape(-1)):
        if not good:
            need = "both classes 0 and 1" if k == 2 else f"every class 0 .. {k - 1}"
            raise JobError(
                f"label {job.label!r}: the pooled {what} rows of the data parties {list(job.data_parties)} "
                f"do not contain {need}"
            )


def secure_metrics(job, est, x_te, y_te, to) -> dict[str, float | None] | None:
    """Held-out metrics computed securely and opened to ``to``; None at other parties.
    Binary classification: ``accuracy``, ``auc``, ``precision``, ``recall``, ``f1`` (class 1
    predicted where its probability is at least the job's ``threshold``) and ``pr_auc`` (average
    precision); the ranking metrics sort the held-out scores obliviously (``covault.ml.ranking``),
    at any size. Multiclass: ``accuracy``. Regression: ``r2``, ``rmse``."""
    import math

    from covault import ml
    from covault.ops import compare

    if job.kind == "regression":
        pred = est.predict(x_te)
        return _collect(
            {"r2": ml.r2_score(y_te, pred, to=to), "rmse": ml.root_mean_squared_error(y_te, pred, to=to)}
        )
    if job.task == "mlp":
        logits = est.decision_function(x_te)
        k = job.n_classes
        pred = (logits.argmax(axis=1) * np.arange(k)).sum(axis=1)
        score = logits[:, 1] - logits[:, 0] if k == 2 else None  # the logit of class 1
    else:
        score = est.decision_function(x_te)
        pred = None
    if score is not None:
        t = job.threshold
        if t == 0.5:
            pred = compare.greater_than(score, 0)
        else:
            pred = ml.predict_at_threshold(score, math.log(t / (1 - t)))
    values = {"accuracy": ml.accuracy_score(y_te, pred, to=to)}
    unranked: tuple[str, ...] = ()
    if score is not None:
        if _oblivious_shuffle(y_te.session):
            values.update(
                auc=ml.roc_auc_score(y_te, score, to=to),
                pr_auc=ml.average_precision_score(y_te, score, to=to),
            )
        else:  # the ranking metrics sort after an oblivious shuffle, which this session lacks
            unranked = ("auc", "pr_auc")
            values.update(auc=None, pr_auc=None)
        values.update(
            precision=ml.precision_score(y_te, pred, to=to),
            recall=ml.recall_score(y_te, pred, to=to),
            f1=ml.f1_score(y_te, pred, to=to),
        )
    return _collect(values, unranked)


def _oblivious_shuffle(session) -> bool:
    """Whether ``session``'s protocol and provider have an oblivious shuffle
    (:attr:`covault.randomness.providers.Provider.shuffle`)."""
    from covault.randomness.providers import PROVIDERS

    return session.provider_name is None or PROVIDERS[session.provider_name].shuffle


def _collect(
    values: dict[str, float | None], optional: tuple[str, ...] = ()
) -> dict[str, float | None] | None:
    required = [k for k in values if k not in optional]
    if any(values[k] is None for k in required):
        return None
    return values
