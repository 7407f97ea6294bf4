"""The job commands: ``covault train``, ``covault demo``, ``covault party JOB --as NAME``; progress."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from covault.cli import main as cli
from covault.jobs import format_table, render_html
from covault.jobs.demo import ID_COLUMN, LABEL, breast_cancer, make_breast_cancer_job
from covault.jobs.progress import Bar, progress_display, resolve_mode, step_position
from covault.jobs.report import json_safe
from tests.helpers import HOSPITALS, approve_all, approved_tiny_job, deploy_job, run_parties, tiny_job

pytestmark = pytest.mark.processes

pytest.importorskip("sklearn")


def strict_json(line: str) -> dict:
    """Parse one JSON line, refusing NaN / Infinity (not JSON)."""

    def bad(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=bad)


# -- covault train -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["logistic_regression", "linear_regression"])
def test_train_json_is_the_last_stdout_line(tmp_path, capsys, task):
    path = tiny_job(tmp_path, task)
    report = tmp_path / "out" / "report.html"
    code = cli(
        ["train", str(path), "--json", "--transport", "local", "--compare-plaintext", "--report", str(report)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    res = strict_json(out.strip().splitlines()[-1])
    assert res["transport"] == "local" and res["task"] == task
    assert res["train_rows"] + res["test_rows"] == 40 + 50 + 60
    classes = ("accuracy", "auc", "pr_auc", "precision", "recall", "f1")
    names = classes if task == "logistic_regression" else ("r2", "rmse")
    assert set(res["metrics"]) == set(names) == set(res["plaintext"]["metrics"])
    if task == "logistic_regression":
        for m in ("accuracy", "auc"):
            assert 0.75 <= res["metrics"][m] <= 1.0 and 0.75 <= res["plaintext"]["metrics"][m] <= 1.0
        assert abs(res["metrics"]["accuracy"] - res["plaintext"]["metrics"]["accuracy"]) <= 0.1
    else:
        assert res["metrics"]["r2"] > 0.5 and 0 < res["metrics"]["rmse"] < 2.0
        assert abs(res["metrics"]["r2"] - res["plaintext"]["metrics"]["r2"]) < 0.1
    assert set(res["bytes_sent"]) == set(HOSPITALS)
    assert all(isinstance(v, int) and v > 0 for v in res["bytes_sent"].values())
    assert res["seconds"] > 0 and len(res["loss_curve"]) == 2
    assert "report written to" in err and report.is_file() and "<svg" in report.read_text()


def test_train_table_and_quiet(tmp_path, capsys):
    path = tiny_job(tmp_path)
    assert cli(["train", str(path), "--transport", "local", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "secure (MPC)" in out and "accuracy" in out and "hospital_c" in out
    assert "plaintext" not in out.split("\n\n")[1]  # no baseline column without --compare-plaintext
    assert err == ""
    assert cli(["train", str(path), "--transport", "local"]) == 0  # not a terminal: step lines
    err = capsys.readouterr().err
    assert "[hospital_a] schema agreed" in err and "trained 2 epochs" in err


def test_train_missing_data_file_is_one_line_naming_the_party(tmp_path, capsys):
    path = tiny_job(tmp_path)
    (tmp_path / "hospital_b.csv").unlink()
    code = cli(["train", str(path), "--json", "--transport", "local"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(
        r"covault train: error: DataError: party 'hospital_b': data file .*hospital_b\.csv not found",
        lines[0],
    )


def test_train_bad_job_file(tmp_path, capsys):
    path = tiny_job(tmp_path)
    path.write_text(path.read_text().replace('task = "logistic_regression"', 'task = "svm"'))
    assert cli(["train", str(path), "--transport", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("covault train: error: JobError: task must be one of") and "\n" not in err
    assert cli(["train", str(tmp_path / "none.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def covault(*args: str, timeout: float = 90) -> tuple[str, str, int]:
    """``python -m covault ARGS`` in a subprocess: ``(stdout, stderr, exit code)``."""
    done = subprocess.run(
        [sys.executable, "-m", "covault", *args], capture_output=True, text=True, timeout=timeout
    )
    return done.stdout, done.stderr, done.returncode


def one_error_line(err: str, prog: str, pattern: str) -> None:
    """``err`` is exactly one line ``PROG: error: ...`` matching ``pattern`` (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.fullmatch(f"{re.escape(prog)}: error: {pattern}", lines[0]), lines[0]


def test_train_job_file_that_is_not_utf8_or_a_directory(tmp_path):
    path = tiny_job(tmp_path)
    text = path.read_text().replace('label = "y"', '# label of the caf\u00e9 data\nlabel = "y"')
    path.write_bytes(text.encode("latin-1"))
    out, err, code = covault("train", str(path), "--transport", "local")
    assert code == 2 and out == ""
    one_error_line(
        err,
        "covault train",
        r"JobError: job file .*job\.toml is not UTF-8 text \(byte 0xe9 at line 3\); TOML files must be "
        r"saved as UTF-8",
    )
    out, err, code = covault("train", str(tmp_path), "--transport", "local")
    assert code == 2
    one_error_line(err, "covault train", r"JobError: job file .* is a directory, not a file")


def test_train_data_path_that_is_a_directory(tmp_path):
    path = tiny_job(tmp_path)
    (tmp_path / "hospital_b.csv").unlink()
    (tmp_path / "hospital_b.csv").mkdir()
    out, err, code = covault("train", str(path), "--transport", "local", "--json")
    assert code == 2 and out == ""
    one_error_line(
        err,
        "covault train",
        r"DataError: party 'hospital_b': data file .*hospital_b\.csv is a directory, not a file",
    )


def test_train_refuses_an_mlp_larger_than_memory(tmp_path):
    path = tiny_job(tmp_path)
    text = path.read_text().replace('task = "logistic_regression"', 'task = "mlp"')
    path.write_text(text.replace("epochs = 2", "epochs = 2\nhidden = [100000000]"))
    out, err, code = covault("train", str(path), "--transport", "local", "--quiet")
    assert code == 2 and out == ""
    one_error_line(
        err,
        "covault train",
        r"JobError: the job needs about \d+ GB of memory per compute party \(hidden layer of 100000000 units, "
        r"4 features, 105 rows at once\), \d+ GB for the 3 parties holding shares on this host \(hospital_a, "
        r"hospital_b, hospital_c\); this host has [\d.]+ [GM]B available( \(raised at party '\w+'\))?",
    )


def test_train_learning_rate_limit_and_divergence_warning(tmp_path):
    path = tiny_job(tmp_path, "linear_regression")
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 2\nlearning_rate = 1e9"))
    out, err, code = covault("train", str(path), "--transport", "local", "--json")
    assert code == 2 and out == ""
    one_error_line(
        err, "covault train", r"JobError: \[model\]: learning_rate must be at most 10 .*, got 1000000000\.0"
    )
    path.write_text(path.read_text().replace("learning_rate = 1e9", "learning_rate = 10"))
    out, err, code = covault("train", str(path), "--transport", "local", "--json")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no Python warning text, no traceback
    assert re.fullmatch(
        r"covault train: warning: TrainingDivergedWarning: training diverged: the loss after epoch [12] is "
        r".*; lower learning_rate \(now 10\)",
        lines[0],
    )
    res = strict_json(out.strip().splitlines()[-1])
    assert res["diverged"] is True
    assert res["warnings"] == [{"type": "TrainingDivergedWarning", "message": lines[0].split(": ", 3)[3]}]


def test_consortium_config_that_is_not_utf8(tmp_path):
    cfg = tmp_path / "consortium.toml"
    cfg.write_bytes(('# consortium of the caf\u00e9s\nprotocol = "rep3"\n').encode("latin-1"))
    script = tmp_path / "script.py"
    script.write_text("def main(session):\n    return 1\n")
    out, err, code = covault("run", str(cfg), str(script))
    assert code == 2
    one_error_line(err, "covault run", r".*consortium\.toml is not UTF-8 text \(byte 0xe9 at line 1\).*")
    out, err, code = covault("party", str(cfg), "--as", "a", str(script))
    assert code == 2
    one_error_line(err, "covault party a", r"ConfigError: config file .*consortium\.toml is not UTF-8 text.*")


# -- covault demo ------------------------------------------------------------------------------------
def test_demo_end_to_end_over_tls(tmp_path, capsys):
    """The main job, once: three hospital processes over mutual TLS, table and report."""
    out_dir = tmp_path / "demo"
    assert cli(["demo", "--epochs", "2", "--out", str(out_dir), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("covault demo: three hospitals") and "over mutual TLS" in out
    table = out[out.index("logistic_regression on label") :]
    accuracy = re.search(r"^accuracy\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)%$", table, re.M)
    assert accuracy, table
    secure, plain = float(accuracy.group(1)), float(accuracy.group(2))
    assert secure > 90 and abs(secure - plain) <= 2.0
    assert re.search(r"^AUC\s+0\.9\d+\s+0\.9\d+", table, re.M)
    for name in HOSPITALS:
        assert re.search(rf"^{name}\s+compute,data,receiver\s+\d+/\d+\s+\d+\.\d+", table, re.M)
    report = out_dir / "report.html"
    assert f"report: {report.resolve()}" in out
    html = report.read_text()
    assert "<polyline" in html and "centralised plaintext" in html and "transport <code>tcp</code>" in html
    assert (out_dir / "model.onnx").is_file() and (out_dir / "job.toml").is_file()


# -- covault party JOB --as NAME ---------------------------------------------------------------------
def test_party_runs_its_side_of_a_job_without_a_script(tmp_path, capsys):
    """Three ``covault party JOB --as NAME`` processes (as on three hosts), mutual TLS, each
    with its signed approval."""
    path = approved_tiny_job(tmp_path)
    capsys.readouterr()
    done = run_parties(path, {"hospital_a": [], "hospital_b": ["--quiet"], "hospital_c": ["--json"]})
    for n, (_, err, code) in done.items():
        assert code == 0, f"{n}: {err}"
    res = strict_json(done["hospital_c"][0].strip().splitlines()[-1])
    assert res["party"] == "hospital_c" and res["roles"] == ["compute", "data", "receiver"]
    assert res["diverged"] is False and res["warnings"] == []
    assert 0.75 <= res["metrics"]["accuracy"] <= 1.0 and len(res["loss_curve"]) == 2
    a_out, a_err, _ = done["hospital_a"]
    assert "party hospital_a (compute, data)" in a_out
    assert "revealed to hospital_c only" in a_out and "accuracy" not in a_out
    assert "[hospital_a] schema agreed" in a_err  # progress lines: stderr is not a terminal
    assert done["hospital_b"][1] == ""  # --quiet


def test_party_2pc_with_a_dealer_and_a_data_only_party(tmp_path, capsys):
    """2pc between hospital_a and hospital_b, a dealer, and hospital_c that only owns rows: four
    ``covault party`` processes over mutual TLS."""
    path = tiny_job(tmp_path)
    names = [*HOSPITALS, "dealer"]

    def edit(text: str) -> str:
        text = text.replace('protocol = "rep3"', 'protocol = "2pc"\ndealer = "dealer"')
        text = text.replace("[model]", 'reveal_model_to = ["hospital_c"]\ntimeout = 10\n[model]')
        return text + "[parties.dealer]\n"

    deploy_job(path, names, edit)
    approve_all(path, names)
    capsys.readouterr()
    done = run_parties(path, {n: ["--json"] for n in names})
    for n, (_, err, code) in done.items():
        assert code == 0, f"{n}: {err}"
    res = {n: strict_json(out.strip().splitlines()[-1]) for n, (out, _, _) in done.items()}
    assert res["hospital_c"]["roles"] == ["data", "receiver"]
    assert res["dealer"]["roles"] == ["dealer"] and res["dealer"]["metrics"] is None
    assert 0.75 <= res["hospital_c"]["metrics"]["accuracy"] <= 1.0
    assert res["hospital_a"]["metrics"] is None  # revealed to hospital_c only


def test_party_needs_a_script_for_a_plain_config(tmp_path, capsys):
    cfg = tmp_path / "consortium.toml"
    cfg.write_text('protocol = "rep3"\n' + "".join(f"[parties.{n}]\n" for n in "abc"))
    assert cli(["party", str(cfg), "--as", "a"]) == 2
    assert "not a job file" in capsys.readouterr().err


# -- vertical demo data ------------------------------------------------------------------------------
def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_vertical_demo_data_splits_columns_with_partly_overlapping_patients(tmp_path):
    path = make_breast_cancer_job(tmp_path, 3, vertical=True, missing=0.1)
    text = path.read_text()
    assert 'partition = "vertical"' in text and f'id = "{ID_COLUMN}"' in text
    features, x, y = breast_cancer()
    n = len(y)
    by_id = {}
    seen_cols: list[str] = []
    ids = {}
    for i, name in enumerate(HOSPITALS):
        train_cols, train = read_table(tmp_path / f"{name}.csv")
        test_cols, test = read_table(tmp_path / f"{name}_test.csv")
        assert train_cols == test_cols and train_cols[0] == ID_COLUMN
        assert (LABEL in train_cols) == (i == 0)  # the diagnosis at the first hospital only
        cols = [c for c in train_cols[1:] if c != LABEL]
        seen_cols += cols
        assert len(cols) == 10
        ids[name] = ([r[0] for r in train], [r[0] for r in test])
        assert all(re.fullmatch(r"P\d{6}", v) for v in ids[name][0] + ids[name][1])
        rows = train + test
        assert len({r[0] for r in rows}) == len(rows) == n - round(0.1 * n)  # each lacks ~10%
        assert [r[0] for r in rows] != sorted(r[0] for r in rows)  # its own, shuffled order
        for r in rows:  # the values are the patient's: the same id means the same patient
            by_id.setdefault(r[0], {}).update(zip(train_cols[1:], r[1:]))
    assert seen_cols == features  # every feature exactly once, in groups of columns
    assert [c[:4] for c in seen_cols[:10]] == ["mean"] * 10 and seen_cols[-1].startswith("worst")
    common = set.intersection(*(set(a + b) for a, b in ids.values()))
    assert 0.6 * n < len(common) < 0.85 * n
    assert len(set().union(*(set(a + b) for a, b in ids.values()))) <= n
    # held-out patients are the same at every hospital, never training rows elsewhere
    test_ids = set().union(*(set(b) for _, b in ids.values()))
    train_ids = set().union(*(set(a) for a, _ in ids.values()))
    assert not test_ids & train_ids and 0.25 * n < len(test_ids) < 0.35 * n
    # each record matches the source data: find rows by their feature values
    index = {tuple(f"{v:.6g}" for v in row): k for k, row in enumerate(x)}
    matched = 0
    for values in by_id.values():
        if len(values) == len(features) + 1:
            k = index[tuple(values[f] for f in features)]
            assert int(values[LABEL]) == y[k]
            matched += 1
    assert matched == len(common)


def test_demo_data_for_named_or_counted_parties(tmp_path):
    path = make_breast_cancer_job(tmp_path / "h", 4, "2pc")
    text = path.read_text()
    assert 'compute = ["hospital_a", "hospital_b"]' in text and '[parties."hospital_d"]' in text
    assert 'dealer = "dealer"' in text and "partition" not in text


# -- progress ----------------------------------------------------------------------------------------
def test_progress_modes():
    assert resolve_mode(False) == "off" and resolve_mode("lines") == "lines"
    assert resolve_mode(True, io.StringIO()) == "lines"  # not a terminal
    with pytest.raises(ValueError):
        resolve_mode("fancy")


def test_step_lines_move_the_bar_forward():
    steps = [
        "schema agreed: 3 data parties, 398 training and 171 held-out rows, 30 features",
        "rows secret-shared (0.01 s)",
        "epoch 1/4",
        "epoch 4/4",
        "trained 4 epochs (0.72 s)",
        "metrics: accuracy 0.9825, auc 0.9987",
    ]
    fractions = [step_position(s)[0] for s in steps]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] < 1
    assert step_position("epoch 2/4")[1] == "training: epoch 2/4"
    assert step_position("rows secret-shared (0.01 s)")[2] is not None  # busy while training
    assert step_position("something new", training=True)[0] is None


def test_bar_renders_within_the_terminal_width():
    out = io.StringIO()
    bar = Bar(out, width=60, unicode=False)
    bar.set(0.5, "training: epoch 5/10 with a label much too long for the line")
    line = out.getvalue().split("\r")[-1].replace("\x1b[K", "")
    assert len(line) < 60 and "50%" in line and "#" in line and line.endswith(" s")
    bar.print_above("a warning")
    bar.close("done")
    assert "a warning\n" in out.getvalue() and out.getvalue().endswith("\n")


def test_progress_bar_reads_step_lines_from_the_tapped_descriptor(tmp_path):
    """The bar mode points a descriptor at a pipe; step lines feed the bar, others pass through."""
    target = tmp_path / "terminal"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        with progress_display("bar", "hospital_a", start="starting", epochs=3, fd=fd) as say:
            os.write(fd, b"[hospital_a] schema agreed: 3 data parties\n[hospital_a] epoch 2/3\n")
            os.write(fd, b"a warning from somewhere\n[hospital_b] another party's line\n")
            say("training the centralised plaintext baseline", 0.97)
        os.write(fd, b"after\n")  # the descriptor is back where it was
    finally:
        os.close(fd)
    text = target.read_text()
    assert "training: epoch 2/3" in text and "schema agreed" in text
    assert "a warning from somewhere\n" in text and "[hospital_b] another party's line\n" in text
    assert "[hospital_a] epoch" not in text  # consumed by the bar
    assert "done" in text and text.endswith("after\n")


# -- presenting results ------------------------------------------------------------------------------
def test_json_safe_and_psi_in_table_and_report(tmp_path):
    assert json_safe({"a": np.float32(0.5), "b": (np.int64(3), np.array([1, 2])), "c": float("nan")}) == {
        "a": 0.5,
        "b": [3, [1, 2]],
        "c": None,
    }
    path = tiny_job(tmp_path)
    from covault.jobs import run_local

    res = run_local(path, transport="local", progress=False)
    assert "private set intersection" not in format_table(res)
    res["psi"] = {
        "intersection": 415,
        "sizes": {"hospital_a": 512, "hospital_b": 512, "hospital_c": 512},
        "seconds": 0.25,
        "bytes_sent": {"hospital_a": 1_000_000, "hospital_b": 2_000_000, "hospital_c": 0},
    }
    table = format_table(res)
    assert "private set intersection: 415 ids held by every data party" in table and "3.00 MB" in table
    assert "415 ids" in render_html(res)
    json.dumps(json_safe(res), allow_nan=False)
