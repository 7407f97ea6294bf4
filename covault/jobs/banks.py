"""Demo job: five banks train a fraud classifier on their raw transaction tables.

:func:`make_bank_job` writes what five banks would really hold, not a cleaned matrix: each
bank's table has a customer's name, e-mail address and phone number, a string account id, an
IBAN, amounts and balances in the millions, a country and a channel as text, missing cells
(``NA`` or empty), and its columns in its own order. ``bank_a`` and ``bank_b`` keep CSV files,
``bank_c`` Parquet, ``bank_d`` a SQLite database and ``bank_e`` a CSV file. Each bank has a policy
file (which columns may be used, what to do with its PII columns, where models and shares may
go, who may receive the model) and the job file declares the features by name and their
transforms; nothing is rescaled or cleaned by hand.

The label ``is_fraud`` (about 10% positives) follows a logistic model of the log amount, the
balance, the age, the channel, the country, the number of transactions in 24 hours and
whether the card is foreign. Synthetic data from numpy's generator: demo data, not a secret.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np

from covault.jobs.errors import JobError

BANKS = ("bank_a", "bank_b", "bank_c", "bank_d", "bank_e")
LABEL = "is_fraud"
FEATURES = ("amount", "balance", "age", "country", "channel", "tx_24h", "foreign_card")
COUNTRIES = ("DE", "FR", "NL", "BE", "ES", "IT")
CHANNELS = ("web", "mobile", "branch")
_FIRST = (
    "Anna",
    "Lukas",
    "Marie",
    "Jonas",
    "Sophie",
    "Elias",
    "Lea",
    "Noah",
    "Emma",
    "Paul",
    "Chloé",
    "Hugo",
)
_LAST = (
    "Müller",
    "Dubois",
    "de Vries",
    "Janssens",
    "García",
    "Rossi",
    "Schmidt",
    "Martin",
    "Bakker",
    "Peeters",
)


def _iban(rng: np.random.Generator) -> str:
    """A German IBAN with valid check digits (ISO 13616 mod 97)."""
    bban = "".join(str(d) for d in rng.integers(0, 10, 18))
    digits = bban + "1314" + "00"  # D = 13, E = 14
    check = 98 - int(digits) % 97
    return f"DE{check:02d}{bban}"


def _people(n: int, rng: np.random.Generator) -> dict[str, list]:
    first = rng.choice(_FIRST, n)
    last = rng.choice(_LAST, n)
    names = [f"{f} {s}" for f, s in zip(first, last)]
    emails = [
        f"{f.lower()}.{s.lower().replace(' ', '')}{i}@example.org"
        for i, (f, s) in enumerate(zip(first, last))
    ]
    phones = [f"+49 30 {rng.integers(1000000, 9999999)}" for _ in range(n)]
    return {"customer_name": names, "email": emails, "phone": phones}


def _rows(n: int, rng: np.random.Generator, start: int) -> dict[str, list]:
    """One bank's raw columns (text cells as written; None = missing)."""
    amount = np.exp(rng.normal(7.0, 2.2, n)).round(2)  # a few in the millions
    balance = np.exp(rng.normal(9.5, 1.8, n)).round(2)
    age = rng.integers(18, 92, n).astype(float)
    country = rng.choice(COUNTRIES, n, p=(0.3, 0.2, 0.15, 0.1, 0.15, 0.1))
    channel = rng.choice(CHANNELS, n, p=(0.45, 0.4, 0.15))
    tx = rng.poisson(2.0, n)
    foreign = rng.random(n) < 0.15
    logit = (
        -5.6
        + 0.55 * np.log1p(amount)
        - 0.25 * np.log1p(balance)
        + 1.2 * foreign
        + 0.35 * tx
        + 0.9 * (channel == "web")
        - 0.6 * (channel == "branch")
        + 0.7 * (country == "NL")
        - 0.015 * (age - 45)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    cols: dict[str, list] = {
        "account_id": [f"ACC-{start + i:08d}" for i in range(n)],
        "iban": [_iban(rng) for _ in range(n)],
        **_people(n, rng),
        "amount": amount.tolist(),
        "balance": balance.tolist(),
        "age": age.tolist(),
        "country": country.tolist(),
        "channel": channel.tolist(),
        "tx_24h": tx.tolist(),
        "foreign_card": ["true" if f else "false" for f in foreign],
        LABEL: y.tolist(),
    }
    for name, rate in (("amount", 0.02), ("age", 0.05), ("country", 0.03), ("balance", 0.01)):
        for i in np.flatnonzero(rng.random(n) < rate):
            cols[name][i] = None
    return cols


def _cell(v) -> str:
    if v is None:
        return "NA"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _write_csv(path: Path, order: list[str], cols: dict[str, list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(order)
        for i in range(len(cols[order[0]])):
            w.writerow([_cell(cols[c][i]) for c in order])


def _write_parquet(path: Path, order: list[str], cols: dict[str, list]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise JobError(
            "the bank demo writes one bank's table as Parquet: pip install 'covault[parquet]'"
        ) from None
    arrays = {}
    for c in order:
        v = cols[c]
        if c == "foreign_card":
            arrays[c] = pa.array([x == "true" for x in v], type=pa.bool_())
        elif c in ("amount", "balance", "age"):
            arrays[c] = pa.array(v, type=pa.float64())
        elif c in ("tx_24h", LABEL):
            arrays[c] = pa.array(v, type=pa.int64())
        else:
            arrays[c] = pa.array(v, type=pa.string())
    pq.write_table(pa.table(arrays), path, row_group_size=max(1, len(cols[order[0]]) // 4))


def _write_sqlite(path: Path, order: list[str], cols: dict[str, list]) -> None:
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        types = {
            c: "REAL"
            if c in ("amount", "balance", "age")
            else "INTEGER"
            if c in ("tx_24h", LABEL)
            else "TEXT"
            for c in order
        }
        types["foreign_card"] = "BOOLEAN"
        con.execute(f"CREATE TABLE transactions ({', '.join(f'{c} {types[c]}' for c in order)})")
        n = len(cols[order[0]])
        rows = [
            tuple((cols[c][i] == "true") if c == "foreign_card" else cols[c][i] for c in order)
            for i in range(n)
        ]
        marks = ", ".join("?" * len(order))  # column names are the demo's own constants
        con.executemany(f"INSERT INTO transactions VALUES ({marks})", rows)  # noqa: S608
        con.commit()
    finally:
        con.close()


POLICY = """# {bank}'s policy: checked by {bank} before anything leaves it
deny_columns = ["phone"]
allowed_tasks = ["logistic_regression"]
reveal_to = ["bank_a", "bank_b", "bank_c"]
min_rows = 500
hash_key_file = "join.key"
[pii]
customer_name = "drop"
email = "drop"
iban = "drop"
account_id = "hash"
[outputs]
model_to_regions = ["EU"]
shares_to_regions = ["EU"]
"""

JOB = """# five banks train a fraud classifier; bank_a, bank_b and bank_c compute (rep3)
protocol = "{protocol}"
task = "logistic_regression"
label = "is_fraud"
features = {features}
reveal_model_to = ["bank_a"]
test_fraction = 0.25
seed = 11
model_out = "model.onnx"
[transform]
amount = {{ log1p = true, impute = "mean" }}
balance = {{ impute = "mean" }}
age = {{ clip = [18, 100], impute = 40 }}
country = {{ categories = {countries} }}
channel = {{ categories = {channels} }}
[model]
epochs = {epochs}
learning_rate = 0.5
lr_schedule = "linear"            # the step shrinks every epoch: the model settles whatever the row order
sigmoid = "exact"                 # the loss scikit-learn minimises (the piecewise one lands ~0.4 pp lower)
batch_size = 128
class_weight = "balanced"         # fraud is rare: weigh it up, as scikit-learn does
"""


def make_bank_job(
    out: str | Path, rows: int = 2000, *, protocol: str = "rep3", epochs: int = 10, seed: int = 5
) -> Path:
    """Write five banks' raw tables, policies, join key and ``job.toml`` into ``out``; the job path.

    ``rows``: rows per bank (the banks hold 1x, 1.5x, 0.5x, 1x, 0.75x of it)."""
    if rows < 40:
        raise JobError(f"the bank demo needs at least 40 rows per bank, got {rows}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (out / "join.key").write_bytes(rng.bytes(32))  # demo key shared by the banks (hash of account ids)
    start = 0
    sources = {}
    for bank, weight in zip(BANKS, (1.0, 1.5, 0.5, 1.0, 0.75)):
        n = int(rows * weight)
        cols = _rows(n, rng, start)
        start += n
        order = list(cols)
        rng.shuffle(order)
        if bank == "bank_c":
            _write_parquet(out / f"{bank}.parquet", order, cols)
            sources[bank] = f'"{bank}.parquet"'
        elif bank == "bank_d":
            _write_sqlite(out / f"{bank}.db", order, cols)
            sources[bank] = f'{{ url = "sqlite:///{bank}.db", table = "transactions" }}'
        else:
            _write_csv(out / f"{bank}.csv", order, cols)
            sources[bank] = f'"{bank}.csv"'
        (out / f"{bank}.policy.toml").write_text(POLICY.format(bank=bank))
    compute = BANKS[:3] if protocol == "rep3" else BANKS[:2]
    text = JOB.format(
        protocol=protocol,
        features=_toml_list(FEATURES),
        countries=_toml_list(COUNTRIES),
        channels=_toml_list(CHANNELS),
        epochs=epochs,
    )
    parties = "".join(
        f'[parties.{b}]\nregion = "EU"\ndata = {sources[b]}\npolicy = "{b}.policy.toml"\n' for b in BANKS
    )
    head, model = text.split("[transform]", 1)
    text = head + f"compute = {_toml_list(compute)}\n[transform]" + model + parties
    path = out / "job.toml"
    path.write_text(text)
    return path


def _toml_list(values) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"
