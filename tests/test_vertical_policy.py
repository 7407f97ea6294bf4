"""A data owner's column and PII rules hold in vertical jobs too: a denied, dropped or
PII-looking column, or a [pii] action a vertical job cannot apply, refuses the job at the owner
and at every other party before the intersection."""

from __future__ import annotations

import pytest

from covault.jobs import load_job, run_local
from covault.jobs.errors import RefusedError
from covault.jobs.owner import check_owner_usage
from tests.test_jobs_vertical import make_vertical_job


def _with_policy(path, party: str, text: str) -> None:
    (path.parent / f"{party}.policy.toml").write_text(text)
    job = path.read_text()
    marker = f'[parties."{party}"]\n'
    if marker not in job:
        raise AssertionError(f"{marker!r} is not in {path}")
    path.write_text(job.replace(marker, f'{marker}policy = "{party}.policy.toml"\n', 1))


@pytest.mark.parametrize(
    ("policy", "rule", "why"),
    [
        ('deny_columns = ["ldl"]\n', "deny_columns", ""),
        # a vertical job would use the column raw and bypass the owner's local DP
        ("[privacy.local_dp]\nldl = { epsilon = 1.0, bounds = [0, 300] }\n", "privacy.local_dp", ".*raw"),
    ],
)
def test_a_refused_column_refuses_a_vertical_job(tmp_path, policy, rule, why):
    path = make_vertical_job(tmp_path)
    _with_policy(path, "lab", policy)
    with pytest.raises(RefusedError, match=rf"^lab refused the job: .*rule {rule}.*'ldl'{why}") as e:
        check_owner_usage(load_job(path), "lab")
    assert e.value.rule == rule and e.value.subject == "ldl"


def test_a_dropped_column_refuses_a_vertical_job_at_every_party(tmp_path):
    path = make_vertical_job(tmp_path)
    _with_policy(path, "pharmacy", '[pii]\nrefills = "drop"\n')
    with pytest.raises(RefusedError, match=r"^pharmacy refused the job: .*rule pii.*'refills'"):
        run_local(path, transport="local", progress=False)


def test_a_hashed_id_refuses_a_vertical_job(tmp_path):
    path = make_vertical_job(tmp_path)
    (tmp_path / "join.key").write_bytes(b"k" * 32)
    _with_policy(path, "lab", 'hash_key_file = "join.key"\n[pii]\npid = "hash"\n')
    with pytest.raises(RefusedError, match=r"rule pii.*'pid'.*vertical"):
        check_owner_usage(load_job(path), "lab")


def test_card_numbers_without_a_rule_refuse_a_vertical_job(tmp_path):
    path = make_vertical_job(tmp_path, n=120)
    csv = tmp_path / "lab.csv"
    lines = csv.read_text().splitlines()
    luhn = [4539578763621486, 4556737586899855, 4916338506082832, 4024007198964305, 4716461583322103]
    out = [lines[0] + ",card_number"]
    out += [f"{line},{luhn[i % len(luhn)]}" for i, line in enumerate(lines[1:])]
    csv.write_text("\n".join(out) + "\n")
    with pytest.raises(RefusedError, match=r"^lab refused the job: .*'card_number' looks like card numbers"):
        check_owner_usage(load_job(path), "lab")


def test_allowed_columns_pass(tmp_path):
    path = make_vertical_job(tmp_path)
    _with_policy(path, "lab", 'allow_columns = ["pid", "glucose", "ldl"]\n')
    check_owner_usage(load_job(path), "lab")


def test_a_locally_noised_column_refuses_a_vertical_job_at_every_party(tmp_path):
    path = make_vertical_job(tmp_path)
    _with_policy(path, "lab", "[privacy.local_dp]\nldl = { epsilon = 1.0, bounds = [0, 300] }\n")
    with pytest.raises(RefusedError, match=r"^lab refused the job: .*privacy.local_dp.*'ldl'"):
        run_local(path, transport="local", progress=False)
