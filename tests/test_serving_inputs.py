"""Queries in raw named columns: ``model_rows`` applies the job's transforms exactly as training
did (the owners' reader and ``Preprocessing.apply``), refuses what does not fit by column, and a
model trained by ``covault train`` with ``reveal_model_to = []`` answers raw rows as the float64
pipeline does (covault's preprocessing, then the plaintext model)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import urllib.error

import numpy as np
import pytest

import covault
from covault.errors import ShapeError
from covault.ingest.connectors import read_table
from covault.ingest.table import Column, Table
from covault.ingest.transforms import fit_plain, parse_transforms
from covault.jobs.plaintext import pooled_rows
from covault.jobs.spec import load_job
from covault.serving import load_model
from covault.serving.inputs import ModelInputs, model_rows
from covault.serving.keys import store_folders
from covault.serving.online import Query
from tests.helpers import HOSPITALS, deploy_job, free_ports, gateway_token, post, wait_parties

COLUMNS = ["amount", "age", "country", "vip"]
INPUTS = [("amount", "number"), ("age", "number"), ("country", "text"), ("vip", "bool")]
TRANSFORM = {
    "amount": {"log1p": True, "impute": "mean"},
    "age": {"clip": [18, 80], "impute": 40, "scale": 100.0},  # 80 * 100 > 2^10: an auto scale too
    "country": {"categories": ["DE", "FR", "NL"]},
}
SAME = 2e-3  # one secret model against its opened weights: fixed-point truncation only
REFERENCE = 0.03  # the float64 twin trained on the same rows in another order (2 epochs)


def raw_rows(gen, n: int) -> list[list]:
    """Raw rows: amounts over four orders of magnitude (a few missing), ages (a few missing,
    some outside the clip), a country (one not in the categories, one missing), a 0/1 flag."""
    rows = []
    for _ in range(n):
        amount = "" if gen.random() < 0.05 else f"{gen.lognormal(4, 2):.2f}"
        age = "" if gen.random() < 0.05 else str(int(gen.integers(10, 95)))
        country = ["DE", "FR", "NL", "IT", ""][int(gen.integers(0, 5))]
        rows.append([amount, age, country, str(int(gen.random() < 0.3))])
    return rows


def label(row: list) -> int:
    amount = float(row[0] or 50)
    score = 0.8 * np.log1p(amount) - 3 + (1.5 if row[2] == "FR" else 0) - 0.02 * (float(row[1] or 40) - 40)
    return int(score + 1.2 * int(row[3]) > 0)


def write_csv(path, rows, with_label: bool) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([*COLUMNS, "y"] if with_label else COLUMNS)
        out.writerows([*r, label(r)] if with_label else r for r in rows)


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    """The header info of a model whose job fitted these transforms on two owners' tables."""
    folder = tmp_path_factory.mktemp("inputs")
    gen = np.random.default_rng(5)
    tables = []
    for i in range(2):
        write_csv(folder / f"owner{i}.csv", raw_rows(gen, 40), with_label=False)
        tables.append(read_table(folder / f"owner{i}.csv"))
    pre = fit_plain(tables, INPUTS, parse_transforms(TRANSFORM))
    assert pre.factors["age"] < 1  # the auto scale is part of what a query must apply
    write_csv(folder / "query.csv", raw_rows(gen, 7), with_label=False)
    return {"model_inputs": list(pre.outputs), "preprocessing": pre.to_json()}, pre, folder / "query.csv"


def test_named_columns_in_every_form_give_the_training_transform(info):
    info, pre, query = info
    table = read_table(query)  # a data owner's reading of the same rows
    want = pre.apply(table)
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(query, keep_default_na=True)
    records = [
        {
            c: (None if cell in ("", None) else (cell if c == "country" else float(cell)))
            for c, cell in row.items()
        }
        for row in csv.DictReader(query.open())
    ]
    mapping = {c: [r[c] for r in records] for c in COLUMNS}
    for rows in (query, str(query), frame, records, mapping, json.loads(json.dumps(records))):
        got = model_rows(info, rows, name="fraud")
        assert got.dtype == np.float64 and got.shape == (7, len(pre.outputs))
        np.testing.assert_array_equal(got, want)
    one = model_rows(info, {"amount": 120.5, "age": 33, "country": "FR", "vip": True})
    same = {"amount": [120.5], "age": [33.0], "country": ["FR"], "vip": [1]}
    np.testing.assert_array_equal(one, model_rows(info, same))
    assert one[0, list(pre.outputs).index("country=FR")] == 1.0
    inputs = ModelInputs(info, "fraud")  # parsed once, used per query
    np.testing.assert_array_equal(inputs.rows(records), want)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"amout": 1.0}, ["'amount'", "'amout'", "misspelt"]),  # misspelt: named with the near miss
        ({"amount": None, "extra": 1}, ["'extra'", "does not take"]),
        ({"amount": "12,5"}, ["'amount'", "holds text"]),
        ({"vip": 2}, ["'vip'", "0/1"]),
        ({"amount": float("inf")}, ["'amount'", "infinite"]),
        ({"country": b"DE"}, ["'country'", "bytes"]),
        ({"age": True}, ["'age'", "holds true/false"]),
    ],
)
def test_a_malformed_column_is_refused_by_name(info, change, words):
    info, _, _ = info
    row = {"amount": 10.0, "age": 30, "country": "DE", "vip": 0}
    if "amout" in change:
        row.pop("amount")
    if "extra" in change:
        change = {"extra": 1}
    row.update(change)
    with pytest.raises(ShapeError) as err:
        model_rows(info, [row], name="fraud")
    assert "'fraud'" in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_missing_cells_follow_the_jobs_impute_and_are_refused_without_one(info):
    info, pre, _ = info
    got = model_rows(info, {"amount": [None], "age": [float("nan")], "country": [None], "vip": [1]})
    assert got[0, 0] == pytest.approx(np.log1p(pre.means["amount"]) * pre.factors["amount"])
    assert got[0, 1] == pytest.approx(40 * 100.0 * pre.factors["age"])
    assert got[0, 2:5].tolist() == [0.0, 0.0, 0.0]  # a missing category: all zeros, as in training
    with pytest.raises(ShapeError, match="column 'vip', row 2: missing cell"):
        model_rows(
            info, {"amount": [1, 2], "age": [30, 30], "country": ["DE", "DE"], "vip": [1, None]}, name="m"
        )


def test_a_bare_matrix_only_where_it_is_the_models_input_space(info):
    info, pre, _ = info
    with pytest.raises(ShapeError) as err:
        model_rows(info, np.zeros((2, 6)), name="fraud")
    for w in ("'fraud'", "'amount' (number)", "'country' (text)", "prepared=True", "country=DE"):
        assert w in str(err.value)
    with pytest.raises(ShapeError, match=r"'fraud'.*raw columns"):
        model_rows(info, [[1.0, 2.0, 3.0, 0.0]], name="fraud")  # a JSON array of raw values too
    x = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(model_rows(info, x, prepared=True), x)
    named = {c: x[:, j] for j, c in enumerate(pre.outputs)}
    np.testing.assert_array_equal(model_rows(info, named, prepared=True), x)
    with pytest.raises(ShapeError, match=r"shape \(n, 6\)"):
        model_rows(info, np.zeros((1, 4)), prepared=True)
    with pytest.raises(ShapeError, match="column 'age': NaN"):
        model_rows(info, [[0, np.nan, 0, 0, 0, 0]], prepared=True)
    imported = {"source": "import"}  # no preprocessing, no column names: rows as they are
    np.testing.assert_array_equal(model_rows(imported, x, n_features=6), x)
    with pytest.raises(ShapeError, match="names no input columns"):
        model_rows(imported, {"a": [1.0]}, name="onnx", n_features=1)
    plain = {"model_inputs": ["x1", "x2"], "preprocessing": None}  # named, nothing to apply
    np.testing.assert_array_equal(model_rows(plain, {"x2": [2.0], "x1": [1.0]}), [[1.0, 2.0]])
    np.testing.assert_array_equal(model_rows(plain, [1.0, 2.0]), [[1.0, 2.0]])


# -- a model trained by covault train, queried with raw rows --------------------------------------


def _job(folder):
    gen = np.random.default_rng(21)
    lines = [
        'protocol = "2pc"',
        'compute = ["hospital_a", "hospital_b"]',
        'task = "logistic_regression"',
        'label = "y"',
        "test_fraction = 0.25",
        "seed = 3",
        "reveal_model_to = []",
        'model_store = "risk"',
        "[model]",
        "epochs = 3",
        "batch_size = 16",
        "[transform]",
        *(f"{c} = {json.dumps(t).replace(':', ' =')}" for c, t in TRANSFORM.items()),
    ]
    for i, name in enumerate(HOSPITALS):
        write_csv(folder / f"{name}.csv", raw_rows(gen, 60 + 10 * i), with_label=True)
        lines += [f'[parties."{name}"]', f'data = "{name}.csv"']
    path = folder / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.processes
def test_raw_rows_to_a_trained_secret_model_match_the_plaintext_pipeline(tmp_path):
    job = _job(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "covault", "train", str(job), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    spec = load_job(job)
    folder, keys = store_folders(spec.config, spec.model_dir)
    rows = tmp_path / "rows.csv"
    write_csv(rows, raw_rows(np.random.default_rng(8), 9), with_label=False)

    def program(s):  # the client shares model_rows of its raw CSV; the answer is opened to it alone
        model = load_model(s, folder, "risk", key_dir=keys)
        x = model_rows(model.info, rows, name=model.name) if s.party == "hospital_c" else None
        with Query(s, "hospital_c", model.n_features, model.forward) as query:
            answer = query(x)
        w, b = (t.reveal(to="hospital_c") for t in model.weights)  # opened only to check the answer
        return answer, model.info, w, b

    res = covault.run(program, ["hospital_a", "hospital_b"], "2pc", data_parties=["hospital_c"])
    answer, info, w, b = res["hospital_c"]
    w, b = w.reshape(-1), float(b.reshape(-1)[0])
    assert res["hospital_a"][0] is None and res["dealer"][0] is None
    assert info["model_inputs"] == ["amount", "age", "country=DE", "country=FR", "country=NL", "vip"]
    # the plaintext pipeline: covault's preprocessing of the same raw rows, then the model
    x_tr, y_tr, _, _ = pooled_rows(spec)
    pre = spec_preprocessing(info)
    x = pre.apply(read_table(rows))
    np.testing.assert_allclose(answer, 1 / (1 + np.exp(-(x @ w + b))), atol=SAME)
    twin = spec.reference().fit(x_tr, y_tr).predict_proba(x)[:, 1]
    np.testing.assert_allclose(answer, twin, atol=REFERENCE)
    assert np.ptp(answer) > 0.2  # a trained model on varied rows, not a constant
    # raw values passed as if they were the model's inputs would not be these answers
    naive = read_table(rows).numeric(["amount", "age"])
    assert not np.allclose(np.nan_to_num(naive), x[:, :2])


SERVING = ("hospital_a", "hospital_b", "dealer")


def _parties(job, *args, names=SERVING):
    cmd = [sys.executable, "-m", "covault", *args[:1], str(job), *args[1:]]
    return {n: subprocess.Popen([*cmd, "--as", n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for n in names}  # fmt: skip


@pytest.mark.processes
@pytest.mark.slow
def test_covault_predict_and_the_gateway_take_raw_named_columns(tmp_path):
    job = _job(tmp_path)
    job.write_text(job.read_text().replace('model_store = "risk"', 'model_store = "risk"\ndealer = "dealer"'))
    deploy_job(job, [*HOSPITALS, "dealer"], lambda t: t + "[parties.dealer]\n")
    run = subprocess.run([sys.executable, "-m", "covault", "train", str(job)], capture_output=True, text=True,
                         timeout=180, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    raw = raw_rows(np.random.default_rng(9), 5)
    rows = tmp_path / "rows.csv"
    write_csv(rows, raw, with_label=False)
    records = [dict(r) for r in csv.DictReader(rows.open())]
    for r in records:  # JSON as an application sends it: numbers, null for a missing cell
        r.update({c: None if r[c] == "" else float(r[c]) for c in ("amount", "age", "vip")})
        r["country"] = r["country"] or None
    answers = {}
    for way in ("cli", "http"):
        serve = _parties(job, "serve", "--model", "risk", "--json")
        try:
            if way == "cli":
                ask = _parties(job, "predict", "--model", "risk", "--input", str(rows), "--json",
                               names=["hospital_c"])  # fmt: skip
                (out, err, code) = wait_parties(ask, 60)["hospital_c"]
                assert code == 0, err
                answers[way] = np.array(json.loads(out.splitlines()[-1])["predictions"])
            else:
                port, token_file = free_ports(1)[0], tmp_path / "c.token"
                gw = _parties(job, "gateway", "--model", "risk", "--port", str(port), "--token-file",
                              str(token_file), names=["hospital_c"])["hospital_c"]  # fmt: skip
                url = f"http://127.0.0.1:{port}/predict"
                try:
                    token = gateway_token(url, token_file)
                    answers[way] = np.array(post(url, {"rows": records}, token)["predictions"])
                    with pytest.raises(urllib.error.HTTPError) as bad:  # raw numbers where names are due
                        post(url, {"rows": [[1.0, 2.0, 3.0, 0.0]]}, token)
                    assert bad.value.code == 400 and "'amount' (number)" in bad.value.read().decode()
                    with pytest.raises(urllib.error.HTTPError) as bad:  # rows are JSON, never a file here
                        post(url, {"rows": str(rows)}, token)
                    assert bad.value.code == 400 and "the body must be JSON" in bad.value.read().decode()
                    gw.send_signal(signal.SIGTERM)
                    assert gw.wait(timeout=30) == 0, gw.stderr.read()
                finally:
                    if gw.poll() is None:
                        gw.kill()
                        gw.wait()
        finally:
            for n, (_, err, code) in wait_parties(serve, 60).items():
                assert code == 0, (n, err)
    spec = load_job(job)
    folder, keys = store_folders(spec.config, spec.model_dir)

    def program(s):  # the stored weights, opened here only to check the answers
        model = load_model(s, folder, "risk", key_dir=keys)
        return [t.reveal(to="hospital_c") for t in model.weights], model.info

    (w, b), info = covault.run(program, ["hospital_a", "hospital_b"], "2pc", data_parties=["hospital_c"])[
        "hospital_c"
    ]
    x = spec_preprocessing(info).apply(read_table(rows))
    want = 1 / (1 + np.exp(-(x @ w.reshape(-1) + float(b.reshape(-1)[0]))))
    for way in ("cli", "http"):
        np.testing.assert_allclose(answers[way], want, atol=SAME, err_msg=way)


def spec_preprocessing(info):
    from covault.ingest.transforms import Preprocessing

    return Preprocessing.from_json(info["preprocessing"])


def test_a_job_without_transforms_takes_its_raw_numbers_as_a_matrix():
    cols = [Column("x1", "number", np.array([0.5, -1.0])), Column("x2", "number", np.array([2.0, 3.0]))]
    pre = fit_plain([Table(cols, "t")], [("x1", "number"), ("x2", "number")], {})
    info = {"model_inputs": list(pre.outputs), "preprocessing": pre.to_json()}
    assert ModelInputs(info).identity
    np.testing.assert_array_equal(model_rows(info, [[1.0, 2.0]]), [[1.0, 2.0]])
    np.testing.assert_array_equal(model_rows(info, [{"x2": 2.0, "x1": 1.0}]), [[1.0, 2.0]])
    cols[1] = Column("x2", "number", np.array([2.0, 5000.0]))  # an auto scale: no longer as given
    pre = fit_plain([Table(cols, "t")], [("x1", "number"), ("x2", "number")], {})
    info = {"model_inputs": list(pre.outputs), "preprocessing": pre.to_json()}
    with pytest.raises(ShapeError, match="'x2' \\(number\\) by name"):
        model_rows(info, [[1.0, 2.0]])
    np.testing.assert_array_equal(model_rows(info, {"x1": [1.0], "x2": [4096.0]}), [[1.0, 512.0]])


def test_columns_of_different_lengths_or_rows_with_other_columns_are_refused(info):
    info, _, _ = info
    with pytest.raises(ShapeError, match="different lengths"):
        model_rows(info, {"amount": [1.0, 2.0], "age": [30.0], "country": ["DE", "FR"], "vip": [0, 1]})
    rows = [{"amount": 1.0, "age": 30, "country": "DE", "vip": 0}, {"amount": 1.0, "age": 30, "vip": 0}]
    with pytest.raises(ShapeError, match="row 2 has other columns than row 1 \\(column 'country'\\)"):
        model_rows(info, rows, name="fraud")
    with pytest.raises(ShapeError, match="no rows"):
        model_rows(info, {"amount": [], "age": [], "country": [], "vip": []})
