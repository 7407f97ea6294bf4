"""Vertically partitioned jobs: rows aligned by private set intersection, columns joined in MPC."""

from __future__ import annotations

import numpy as np
import pytest

from covault.jobs import DataError, JobError, load_job, run_local
from covault.jobs import program as job_program_module
from covault.jobs.align import plaintext_alignment, split_common
from covault.jobs.plaintext import pooled_rows
from tests.helpers import write_csv, write_job

PARTIES = ("lab", "pharmacy", "registry")


def make_vertical_job(
    d, *, protocol="rep3", n=240, missing=0.15, seed=3, test_files=False, task="logistic_regression", **top
):
    """Three owners of different columns of ``n`` people; each misses a random ``missing``
    share of them and lists its rows in its own order. The label is at ``registry``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    w = np.array([1.5, -2.0, 0.7, 1.0, -0.5])
    z = x @ w + 0.3 * rng.normal(size=n)
    y = (z > 0).astype(int) if task != "linear_regression" else np.round(z, 4)
    ids = np.array([f"P{i:05d}" for i in range(n)])
    cols = {"lab": ["glucose", "ldl"], "pharmacy": ["doses", "refills"], "registry": ["age", "outcome"]}
    blocks = {"lab": x[:, :2], "pharmacy": x[:, 2:4], "registry": np.column_stack([x[:, 4], y])}
    parties = {}
    is_test = rng.random(n) < 0.25
    for p in PARTIES:
        keep = np.flatnonzero(rng.random(n) >= missing)
        keep = keep[rng.permutation(len(keep))]
        table = {"data": f"{p}.csv"}
        if test_files:
            tr, te = keep[~is_test[keep]], keep[is_test[keep]]
            write_csv(
                d / f"{p}_test.csv", ["pid", *cols[p]], [[ids[i], *np.round(blocks[p][i], 6)] for i in te]
            )
            table["test"] = f"{p}_test.csv"
            keep = tr
        rows = [[ids[i], *np.round(blocks[p][i], 6)] for i in keep]
        write_csv(d / f"{p}.csv", ["pid", *cols[p]], rows)
        parties[p] = table
    job = {"protocol": protocol, "task": task, "label": "outcome", "partition": "vertical", "id": "pid",
           "seed": 1, **top}  # fmt: skip
    return write_job(d / "job.toml", job, {"epochs": 6, "learning_rate": 0.1, "batch_size": 32}, parties)


@pytest.mark.parametrize("protocol", ["rep3", "2pc"])
def test_vertical_logistic_regression_matches_plaintext(tmp_path, protocol):
    path = make_vertical_job(tmp_path, protocol=protocol, n=400)
    res = run_local(path, transport="local", compare_plaintext=True, progress=False)
    job = load_job(path)
    x_tr, y_tr, x_te, y_te = pooled_rows(job)
    psi = res["psi"]
    assert psi["intersection"] == len(y_tr) + len(y_te)
    assert psi["train_rows"] == len(y_tr) and psi["test_rows"] == len(y_te)
    assert res["features"] == ["glucose", "ldl", "doses", "refills", "age"]
    assert x_tr.shape[1] == 5
    acc, ref = res["metrics"]["accuracy"], res["plaintext"]["metrics"]["accuracy"]
    assert acc > 0.85 and abs(acc - ref) <= 2 / len(y_te) + 1e-9, (acc, ref)  # two rows at most
    # the revealed model predicts on the joined plaintext rows what the secure metrics say
    coef = np.asarray(res["model"]["coef"]).reshape(-1)
    pred = (x_te @ coef + float(np.asarray(res["model"]["intercept"]).reshape(-1)[0]) > 0).astype(float)
    assert abs(np.mean(pred == y_te) - acc) <= 1.5 / len(y_te)


def test_vertical_test_files_and_data_only_party(tmp_path):
    # 2pc between lab and pharmacy; the registry (label owner) only shares its column
    path = make_vertical_job(tmp_path, protocol="2pc", test_files=True, compute=["lab", "pharmacy"])
    res = run_local(path, transport="local", progress=False)
    job = load_job(path)
    _, y_tr, _, y_te = pooled_rows(job)
    assert res["psi"]["test_rows"] == len(y_te) and res["psi"]["train_rows"] == len(y_tr)
    assert res["parties"]["registry"]["roles"] == ["data", "receiver"]
    assert res["metrics"]["accuracy"] > 0.85


def test_vertical_linear_regression(tmp_path):
    path = make_vertical_job(tmp_path, task="linear_regression", n=200)
    res = run_local(path, transport="local", compare_plaintext=True, progress=False)
    assert res["metrics"]["r2"] > 0.9
    assert abs(res["metrics"]["r2"] - res["plaintext"]["metrics"]["r2"]) < 0.02


def test_alignment_helpers():
    common = ["test:b", "train:a", "train:c"]
    tr, te = split_common(common, True, 0.5, 0)
    assert tr.tolist() == [1, 2] and te.tolist() == [0]
    tr, te = split_common([f"train:{i}" for i in range(10)], False, 0.3, 4)
    assert len(te) == 3 and sorted(np.concatenate([tr, te]).tolist()) == list(range(10))
    job = type("J", (), {"test": {}, "test_fraction": 0.0, "seed": 0})()
    where = plaintext_alignment(job, {"a": ["train:x", "train:y", "train:z"], "b": ["train:z", "train:x"]})
    assert where["a"][0].tolist() == [0, 2] and where["b"][0].tolist() == [1, 0]


@pytest.fixture
def no_computation(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("secret computation started before the error was detected")

    monkeypatch.setattr(job_program_module, "_share_columns", boom)


def _edit(path, fn):
    import csv

    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    write_csv(path, *fn(rows[0], rows[1:]))


@pytest.mark.parametrize(
    "party,fn,error,message",
    [
        (
            "lab",
            lambda c, r: (["pid", "glucose", "outcome"], [[*x[:2], "1"] for x in r]),
            JobError,
            r"label column 'outcome' is held by parties \['lab', 'registry'\]",
        ),
        (
            "registry",
            lambda c, r: (["pid", "age", "y2"], r),
            JobError,
            r"label column 'outcome' is in no data party's data",
        ),
        (
            "pharmacy",
            lambda c, r: (["pid", "glucose", "refills"], r),
            JobError,
            r"column 'glucose' is held by parties 'lab' and 'pharmacy'",
        ),
        (
            "pharmacy",
            lambda c, r: (["patient", *c[1:]], r),
            DataError,
            r"party 'pharmacy'.*has no id column 'pid'",
        ),
        (
            "lab",
            lambda c, r: (c, [["", *x[1:]] if i == 3 else x for i, x in enumerate(r)]),
            DataError,
            r"party 'lab'.*row 4: empty id",
        ),
        ("lab", lambda c, r: (c, [["Q" + x[0], *x[1:]] for x in r]), JobError, r"intersection .*empty"),
        ("lab", lambda c, r: (c, r + r[:2]), JobError, r"'lab'.*duplicate"),
    ],
)
def test_vertical_errors_before_computation(tmp_path, no_computation, party, fn, error, message):
    path = make_vertical_job(tmp_path, n=60)
    _edit(tmp_path / f"{party}.csv", fn)
    with pytest.raises(error, match=message):
        run_local(path, transport="local", progress=False)


def test_vertical_spec_errors(tmp_path):
    path = make_vertical_job(tmp_path, n=40, test_files=True)
    text = path.read_text().replace('test = "pharmacy_test.csv"\n', "")
    path.write_text(text)
    with pytest.raises(JobError, match=r"every data party gives a test file or none.*\['pharmacy'\]"):
        load_job(path)
