"""A data owner's policy (covault.ingest.policy): the file, every refusal with its message, the
PII actions, and the dry-run plan. The policy sees the job only through a JobView."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from covault.ingest.errors import DataError, PolicyError
from covault.ingest.policy import (
    ColumnVerdict,
    JobView,
    PiiRule,
    Policy,
    apply_policy,
    check_min_rows,
    check_usage,
    generalize_column,
    hash_column,
    load_policy,
    parse_policy,
    plan_columns,
    usage_refusals,
)
from covault.ingest.table import Column, Table

EXAMPLE = """
allow_columns = ["amount", "age", "country", "is_fraud", "customer_id", "email", "name"]
allowed_tasks = ["logistic_regression", "linear_regression"]
reveal_to = ["bank_a", "bank_b"]
min_rows = 1000
hash_key_file = "join.key"
[pii]
name = "drop"
email = "redact"
customer_id = "hash"
age = { generalize = [0, 30, 50, 70] }
[outputs]
model_to_regions = ["EU"]
shares_to_regions = ["EU", "CH"]
"""
KEY = b"0123456789abcdef-join-key"
N = 200


@pytest.fixture
def policy(tmp_path) -> Policy:
    (tmp_path / "join.key").write_bytes(KEY)
    path = tmp_path / "bank_b.policy.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    return load_policy(path)


def job(**kw) -> JobView:
    base = dict(
        owner="bank_b",
        task="logistic_regression",
        features=("amount", "age", "country"),
        label="is_fraud",
        id_column="customer_id",
        reveal_to=("bank_a",),
        share_holders=("bank_a", "bank_b", "bank_c"),
        regions={"bank_a": "EU", "bank_b": "EU", "bank_c": "CH"},
        revealed_rows={"model": 5000, "metrics": 1200},
    )
    base.update(kw)
    return JobView(**base)


def table() -> Table:
    r = np.random.default_rng(0)
    first = ["Anna", "Kofi", "Mei", "Jörg", "Inès"]
    last = ["Okafor", "Dubois", "Nakamura", "García"]
    return Table(
        [
            Column("customer_id", "text", np.array([f"C{i:06d}" for i in range(N)], dtype=object)),
            Column("amount", "number", r.uniform(1, 5000, N).round(2)),
            Column("age", "number", np.r_[r.integers(18, 95, N - 1).astype(float), np.nan]),
            Column("country", "text", np.array(r.choice(["DE", "FR", "NL"], N), dtype=object)),
            Column("email", "text", np.array([f"p{i}@example.org" for i in range(N)], dtype=object)),
            Column(
                "name", "text", np.array([f"{first[i % 5]} {last[i % 4]}" for i in range(N)], dtype=object)
            ),
            Column("is_fraud", "bool", r.integers(0, 2, N).astype(np.float64)),
        ],
        "data file bank_b.csv",
    )


def refused(fn, *args, **kw) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        fn(*args, **kw)
    return e.value


# -- the file ----------------------------------------------------------------------------------


def test_the_example_file_loads(policy, tmp_path):
    assert policy.allow_columns[:3] == ("amount", "age", "country") and policy.deny_columns == ()
    assert policy.allowed_tasks == ("logistic_regression", "linear_regression")
    assert policy.reveal_to == ("bank_a", "bank_b") and policy.min_rows == 1000
    assert policy.model_to_regions == ("EU",) and policy.shares_to_regions == ("EU", "CH")
    assert policy.hash_key_file == tmp_path / "join.key"
    assert policy.pii == {
        "name": PiiRule("drop"),
        "email": PiiRule("redact"),
        "customer_id": PiiRule("hash"),
        "age": PiiRule("generalize", edges=(0.0, 30.0, 50.0, 70.0)),
    }
    assert str(policy.pii["age"]) == "{ generalize = [0, 30, 50, 70] }"
    assert parse_policy({}) == Policy()


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({"allow_column": ["a"]}, "allow_column", "unknown key"),
        ({"outputs": {"model_regions": ["EU"]}}, "outputs.model_regions", "unknown key"),
        ({"outputs": ["EU"]}, "outputs", "must be a table"),
        ({"deny_columns": "ssn"}, "deny_columns", "list of non-empty names"),
        ({"reveal_to": ["a", "a"]}, "reveal_to", "more than once"),
        ({"min_rows": -1}, "min_rows", "whole number >= 0"),
        ({"min_rows": 1.5}, "min_rows", "whole number >= 0"),
        ({"min_rows": True}, "min_rows", "whole number >= 0"),
        ({"pii": {"x": "delete"}}, "pii.x", "unknown action 'delete'"),
        ({"pii": {"x": {"generalise": 3}}}, "pii.x", "generalize"),
        ({"pii": {"x": {"generalize": [30, 10]}}}, "pii.x", "strictly increasing"),
        ({"pii": {"x": {"generalize": 0}}}, "pii.x", "N must be >= 1"),
        ({"pii": {"x": {"generalize": "3"}}}, "pii.x", "list of bin edges"),
        ({"pii": {"x": "hash"}}, "hash_key_file", "names no hash_key_file"),
        ({"hash_key_file": 3}, "hash_key_file", "file name"),
    ],
)
def test_bad_keys_and_values_name_the_key(raw, key, words):
    e = refused(parse_policy, raw, Path("p.policy.toml"))
    assert e.rule == "file" and e.subject == key
    assert str(e).startswith(f"policy file p.policy.toml: key {key}: ") and words in str(e)


def test_unreadable_or_invalid_files_are_refused(tmp_path):
    e = refused(load_policy, tmp_path / "none.policy.toml")
    assert e.rule == "file" and "cannot read it" in str(e)
    bad = tmp_path / "bad.policy.toml"
    bad.write_text("min_rows = = 3", encoding="utf-8")
    assert "not valid TOML" in str(refused(load_policy, bad))


# -- usage -------------------------------------------------------------------------------------


def test_a_job_within_the_policy_passes(policy):
    check_usage(policy, job())
    check_min_rows(policy, job())
    assert usage_refusals(policy, job()) == []
    check_usage(Policy(), job(regions={}))  # no restriction: regions need not be known


def test_allowed_tasks(policy):
    e = refused(check_usage, policy, job(task="mlp"))
    assert (e.rule, e.subject, e.key) == ("allowed_tasks", "mlp", "task")
    assert str(e) == (
        "policy of bank_b (bank_b.policy.toml): rule allowed_tasks: the job's task is 'mlp' (job key task); "
        "allowed tasks: logistic_regression, linear_regression"
    )


def test_reveal_to(policy):
    e = refused(check_usage, policy, job(reveal_to=("bank_a", "bank_x"), regions={"bank_x": "EU"}))
    assert (e.rule, e.subject, e.key) == ("reveal_to", "bank_x", "reveal_model_to")
    assert (
        "rule reveal_to: the job reveals the model and metrics to 'bank_x' (job key reveal_model_to)"
        in str(e)
    )
    assert str(e).endswith("the policy reveals only to: bank_a, bank_b")


def test_model_regions(policy):
    p = parse_policy({"outputs": {"model_to_regions": ["EU"]}}, policy.path)
    e = refused(check_usage, p, job(reveal_to=("bank_a", "bank_x"), regions={"bank_a": "EU", "bank_x": "US"}))
    assert (e.rule, e.subject, e.key) == ("outputs.model_to_regions", "bank_x", "reveal_model_to")
    assert str(e) == (
        "policy of bank_b (bank_b.policy.toml): rule outputs.model_to_regions: the job reveals the model to "
        "'bank_x' in region 'US' (job key reveal_model_to); allowed regions: EU"
    )


def test_a_party_without_region_is_refused_when_regions_are_restricted(policy):
    e = refused(check_usage, policy, job(regions={"bank_b": "EU", "bank_c": "CH"}))
    assert (e.rule, e.subject) == ("outputs.model_to_regions", "bank_a")
    assert "'bank_a', whose region is unknown (no region in the consortium config)" in str(e)
    e = refused(check_usage, policy, job(regions={"bank_a": "EU", "bank_c": None}))
    assert (e.rule, e.subject, e.key) == ("outputs.shares_to_regions", "bank_c", "compute")
    assert "region is unknown" in str(e)


def test_share_regions_concern_the_share_holders(policy):
    e = refused(check_usage, policy, job(regions={"bank_a": "EU", "bank_c": "US"}))
    assert (e.rule, e.subject, e.key) == ("outputs.shares_to_regions", "bank_c", "compute")
    assert str(e) == (
        "policy of bank_b (bank_b.policy.toml): rule outputs.shares_to_regions: the job sends shares of this "
        "owner's data to 'bank_c' in region 'US' (job key compute); allowed regions: EU, CH"
    )


def test_the_owner_itself_needs_no_allowed_region(policy):
    check_usage(
        policy, job(regions={"bank_a": "EU", "bank_b": "US", "bank_c": "CH"}, reveal_to=("bank_a", "bank_b"))
    )


def test_every_usage_refusal_is_listed(policy):
    bad = job(task="mlp", reveal_to=("bank_x",), regions={"bank_c": "US"})
    assert [e.rule for e in usage_refusals(policy, bad)] == [
        "allowed_tasks",
        "reveal_to",
        "outputs.model_to_regions",
        "outputs.shares_to_regions",
        "outputs.shares_to_regions",
    ]


def test_min_rows(policy):
    e = refused(check_min_rows, policy, job(revealed_rows={"model": 5000, "metrics": 999}))
    assert (e.rule, e.subject, e.key) == ("min_rows", "metrics", "reveal_model_to")
    assert str(e) == (
        "policy of bank_b (bank_b.policy.toml): rule min_rows: the metrics revealed to 'bank_a' rests on 999 "
        "pooled rows, fewer than 1000 (job key reveal_model_to)"
    )
    check_min_rows(policy, job(revealed_rows={"model": 1000, "metrics": 1000}))


# -- columns -----------------------------------------------------------------------------------


def test_apply_keeps_id_label_and_features_with_the_actions_applied(policy):
    out, verdicts = apply_policy(policy, table(), job())
    assert out.names == ["customer_id", "amount", "age", "country", "is_fraud"]
    assert [(v.column, v.verdict, v.reason, v.role) for v in verdicts] == [
        ("customer_id", "hashed", "pii: hash", "id"),
        ("amount", "feature", "allowed", "feature"),
        ("age", "generalized", "pii: generalize", "feature"),
        ("country", "feature", "allowed", "feature"),
        ("email", "dropped", "not in features", None),
        ("name", "dropped", "not in features", None),
        ("is_fraud", "label", "allowed", "label"),
    ]
    ids = out["customer_id"].values
    assert out["customer_id"].kind == "text" and all(len(v) == 64 for v in ids) and len(set(ids)) == N
    ages = table()["age"].values
    assert np.array_equal(out["age"].values[:-1], np.digitize(ages[:-1], [0, 30, 50, 70]).astype(float))
    assert np.isnan(out["age"].values[-1])


def test_all_columns_as_features_drops_what_the_policy_excludes(policy, tmp_path):
    p = parse_policy(
        {
            "deny_columns": ["amount"],
            "pii": {"name": "drop", "email": "redact", "country": {"generalize": 1}, "customer_id": "hash"},
            "hash_key_file": "join.key",
        },
        policy.path,
    )
    out, verdicts = apply_policy(p, table(), job(features=None, id_column=None))
    by = {v.column: (v.verdict, v.reason) for v in verdicts}
    assert by == {
        "customer_id": ("dropped", "pii: hash (hashed columns join, they are not features)"),
        "amount": ("dropped", "deny_columns"),
        "age": ("feature", "allowed"),
        "country": ("generalized", "pii: generalize"),
        "email": ("redacted", "pii: redact"),
        "name": ("dropped", "pii: drop"),
        "is_fraud": ("label", "allowed"),
    }
    assert out.names == ["age", "country", "is_fraud"]
    assert set(out["country"].values) <= {"D", "F", "N"}
    allow = parse_policy({"allow_columns": ["age", "is_fraud"]})
    _, verdicts = apply_policy(
        allow, table().select(["amount", "age", "is_fraud"]), job(features=None, id_column=None)
    )
    assert verdicts[0] == ColumnVerdict("amount", "dropped", "not in allow_columns")


@pytest.mark.parametrize(
    ("raw", "kw", "rule", "subject", "key", "words"),
    [
        (
            {"allow_columns": ["age", "is_fraud", "customer_id"]},
            {},
            "allow_columns",
            "amount",
            "features",
            "the job uses column 'amount' as a feature, and it is not in allow_columns",
        ),
        (
            {"allow_columns": ["amount", "age", "country", "customer_id"]},
            {},
            "allow_columns",
            "is_fraud",
            "label",
            "the job uses column 'is_fraud' as the label, and it is not in allow_columns",
        ),
        (
            {"deny_columns": ["customer_id"]},
            {},
            "deny_columns",
            "customer_id",
            "id",
            "the job uses column 'customer_id' as the id column, and it is in deny_columns",
        ),
        (
            {"pii": {"country": "drop"}},
            {},
            "pii",
            "country",
            "features",
            "the job uses column 'country' as a feature, and the policy drops it ([pii] country = \"drop\")",
        ),
        (
            {"pii": {"email": "hash"}, "hash_key_file": "join.key"},
            {"features": ("amount", "email")},
            "pii",
            "email",
            "features",
            'and the policy hashes it ([pii] email = "hash"): a hashed column can only be the id column',
        ),
        (
            {"pii": {"email": "redact"}},
            {"features": ("amount", "email")},
            "pii",
            "email",
            "features",
            'the policy redacts it ([pii] email = "redact"): a redacted column holds no values',
        ),
        (
            {"pii": {"is_fraud": "redact"}},
            {},
            "pii",
            "is_fraud",
            "label",
            "as the label, and the policy redacts it",
        ),
        (
            {"pii": {"customer_id": {"generalize": 2}}},
            {},
            "pii",
            "customer_id",
            "id",
            "generalized ids would not join",
        ),
        (
            {"pii": {"country": {"generalize": [1, 2]}}},
            {},
            "pii",
            "country",
            "features",
            "generalize with bin edges needs numbers, and the column holds text",
        ),
        (
            {"pii": {"age": {"generalize": 2}}},
            {},
            "pii",
            "age",
            "features",
            "generalize = 2 keeps characters of text, and the column holds numbers",
        ),
        (
            {},
            {"features": ("amount", "email")},
            "pii",
            "email",
            "features",
            "column 'email' looks like e-mail addresses (100% of 200 sampled cells) and the policy has no [pii] rule for it",
        ),
        (
            {},
            {"features": ("amount", "name")},
            "pii",
            "name",
            "features",
            "column 'name' looks like person names (100% of 200 sampled cells)",
        ),
        (
            {},
            {"id_column": None, "features": ("customer_id", "amount")},
            "pii",
            "customer_id",
            "features",
            "column 'customer_id' looks like identifiers",
        ),
    ],
)
def test_column_refusals(policy, raw, kw, rule, subject, key, words):
    p = parse_policy(raw, policy.path)
    e = refused(apply_policy, p, table(), job(**kw))
    assert (e.rule, e.subject, e.key) == (rule, subject, key)
    assert str(e).startswith(f"policy of bank_b (bank_b.policy.toml): rule {rule}: ")
    assert words in str(e) and str(e).endswith(f"(job key {key})")


def test_the_id_column_may_look_like_an_identifier_but_not_like_other_pii(policy):
    _, verdicts = apply_policy(Policy(), table(), job())
    assert verdicts[0].verdict == "id" and verdicts[0].finding.kind == "identifiers"
    e = refused(apply_policy, Policy(), table(), job(id_column="email", features=("amount",)))
    assert (e.rule, e.subject, e.key) == ("pii", "email", "id")
    out, _ = apply_policy(
        parse_policy({"pii": {"email": "keep"}}), table(), job(id_column="email", features=("amount",))
    )
    assert out["email"].values[0] == "p0@example.org"


def test_keep_accepts_a_column_detection_flags(policy):
    out, verdicts = apply_policy(
        parse_policy({"pii": {"name": "keep"}}), table(), job(features=("name",), id_column=None)
    )
    assert verdicts[5] == ColumnVerdict("name", "feature", "pii: keep", "feature")
    assert out.names == ["name", "is_fraud"]


@pytest.mark.parametrize(
    ("content", "words"), [(None, "cannot read the key file"), (b"short", "holds 5 bytes, fewer than 16")]
)
def test_hash_needs_a_key_file_of_16_bytes(tmp_path, content, words):
    if content is not None:
        (tmp_path / "join.key").write_bytes(content)
    p = parse_policy(
        {"pii": {"customer_id": "hash"}, "hash_key_file": "join.key"}, tmp_path / "o.policy.toml"
    )
    e = refused(apply_policy, p, table(), job())
    assert (e.rule, e.subject, e.key) == ("hash_key_file", "customer_id", "id")
    assert str(e).startswith("policy of bank_b (o.policy.toml): rule hash_key_file: ") and words in str(e)


def test_hash_is_keyed_and_the_same_at_two_owners():
    ids = Column("id", "text", np.array(["C1", "C2", None], dtype=object))
    a = hash_column(ids, KEY).values
    assert a[2] is None and a[0] != a[1]
    assert list(hash_column(ids, KEY).values) == list(a)  # another owner, same key file
    assert hash_column(ids, KEY + b"!").values[0] != a[0]
    import hashlib
    import hmac

    assert a[0] == hmac.new(KEY, b"C1", hashlib.sha256).hexdigest()
    as_numbers = hash_column(Column("id", "number", np.array([1.0, 2.5, np.nan])), KEY).values
    assert as_numbers[0] == hmac.new(KEY, b"1", hashlib.sha256).hexdigest() and as_numbers[2] is None


def test_generalize_bins_follow_digitize():
    col = Column("age", "number", np.array([-1.0, 0.0, 29.9, 30.0, 69.0, 70.0, 120.0, np.nan]))
    out = generalize_column(col, PiiRule("generalize", edges=(0.0, 30.0, 50.0, 70.0))).values
    assert list(out[:-1]) == [0, 1, 1, 2, 3, 4, 4] and np.isnan(out[-1])
    post = Column("postcode", "text", np.array(["10115", "75001", None], dtype=object))
    assert list(generalize_column(post, PiiRule("generalize", prefix=2)).values) == ["10", "75", None]


def test_a_declared_column_the_table_lacks_is_a_data_error(policy):
    with pytest.raises(DataError, match=r"data file bank_b\.csv has no column 'balance'"):
        apply_policy(policy, table(), job(features=("amount", "balance")))


# -- the dry run -------------------------------------------------------------------------------


def test_plan_reports_every_column_and_every_refusal_without_raising(policy):
    p = parse_policy({"deny_columns": ["amount"], "pii": {"country": "drop"}})
    plan = plan_columns(p, table(), job(features=("amount", "country", "email", "age")))
    assert [(v.column, v.verdict) for v in plan] == [
        ("customer_id", "id"),
        ("amount", "refused"),
        ("age", "feature"),
        ("country", "refused"),
        ("email", "refused"),
        ("name", "dropped"),
        ("is_fraud", "label"),
    ]
    assert [v.error.rule for v in plan if v.error] == ["deny_columns", "pii", "pii"]
    assert plan[4].reason.startswith("rule pii: column 'email' looks like e-mail addresses")
    assert plan[4].finding.kind == "e-mail addresses"


def test_plan_from_names_and_kinds_skips_detection(policy):
    plan = plan_columns(
        policy,
        [
            ("customer_id", "text"),
            ("amount", "number"),
            ("age", "number"),
            ("x", "text"),
            ("is_fraud", "bool"),
        ],
        job(features=("amount", "age")),
    )
    assert [(v.verdict, v.reason) for v in plan] == [
        ("hashed", "pii: hash"),
        ("feature", "not scanned (no data)"),
        ("generalized", "pii: generalize"),
        ("dropped", "not in features"),
        ("label", "not scanned (no data)"),
    ]


def test_unused_columns_are_not_scanned(policy, monkeypatch):
    import covault.ingest.policy as mod

    seen = []
    monkeypatch.setattr(mod, "detect", lambda c, sample: seen.append(c.name))
    apply_policy(Policy(), table(), job(id_column=None, features=("amount",)))
    assert seen == ["amount", "is_fraud"]


def test_the_policy_needs_no_job_layer():
    code = (
        "import sys, covault.ingest.policy; print([m for m in sys.modules if m.startswith('covault.jobs')])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
