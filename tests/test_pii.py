"""PII detection (covault.ingest.pii): every kind on generated values (valid check digits computed
here or by python-stdnum, never real people's data), and the columns that must not be flagged."""

from __future__ import annotations

import time

import numpy as np
import phonenumbers
import pytest
from stdnum import ean, luhn
from stdnum.it import codicefiscale

from covault.ingest.errors import DataError
from covault.ingest.pii import (
    NAME_HINT_THRESHOLD,
    THRESHOLD,
    Finding,
    detect,
    id_hint,
    is_email,
    is_person_name,
    is_phone_number,
    name_hint,
    sample_positions,
)
from covault.ingest.table import Column

N = 600


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def text(name: str, values) -> Column:
    return Column(name, "text", np.array(list(values), dtype=object))


def numbers(name: str, values) -> Column:
    return Column(name, "number", np.asarray(values, dtype=np.float64))


def digits(r: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in r.integers(0, 10, n))


# -- generators (synthetic values with valid check digits) ------------------------------------


def ibans(n: int) -> list[str]:
    r, out = rng(1), []
    for i in range(n):
        country, bban = [("DE", digits(r, 18)), ("NL", "ABNA" + digits(r, 10)), ("FR", digits(r, 23))][i % 3]
        numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
        iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
        out.append(" ".join(iban[k : k + 4] for k in range(0, len(iban), 4)) if i % 2 else iban)
    return out


def card_numbers(n: int) -> list[str]:
    r, out = rng(2), []
    for i in range(n):
        body = ["4" + digits(r, 14), "5" + str(1 + i % 5) + digits(r, 13), "37" + digits(r, 12)][i % 3]
        out.append(body + luhn.calc_check_digit(body))
    return out


def _brute(module, length: int, n: int, seed: int, first: str = "") -> list[str]:
    r, out = rng(seed), []
    while len(out) < n:
        cand = first + digits(r, length - len(first))
        if module.is_valid(cand):
            out.append(cand)
    return out


def national_ids(n: int) -> list[str]:
    from stdnum.be import nn
    from stdnum.de import idnr
    from stdnum.nl import bsn
    from stdnum.pl import pesel

    r = rng(3)
    k = n // 10 + 1
    out = [f"{x[:2]} {x[2:5]} {x[5:8]} {x[8:]}" for x in _brute(idnr, 11, k, 4, first="1")]  # DE IdNr
    for _ in range(k):  # FR NIR: 13 digits and the key 97 - n mod 97
        body = f"{r.integers(1, 3)}{r.integers(40, 99)}{r.integers(1, 13):02d}75{r.integers(1, 999):03d}{r.integers(1, 999):03d}"
        out.append(f"{body}{97 - int(body) % 97:02d}")
    out += _brute(bsn, 9, k, 5)  # NL BSN
    for _ in range(k):  # ES DNI
        num = int(r.integers(10_000_000, 99_999_999))
        out.append(f"{num}{'TRWAGMYFPDXBNJZSQVHLCKE'[num % 23]}")
    for _ in range(k):  # IT codice fiscale (synthetic letters)
        body = "".join(chr(65 + int(c)) for c in r.integers(0, 26, 6)) + f"{r.integers(40, 99)}"
        body += "ABCDEHLMPRST"[int(r.integers(0, 12))] + f"{r.integers(1, 28):02d}" + "F205"
        out.append(body + codicefiscale.calc_check_digit(body))
    for _ in range(k):  # GB NINO (format only)
        out.append(f"AB {r.integers(10, 99)} {r.integers(10, 99)} {r.integers(10, 99)} C")
    out += [f"{x[:2]}.{x[2:4]}.{x[4:6]}-{x[6:9]}.{x[9:]}" for x in _brute(nn, 11, k, 6)]  # BE
    out += _brute(pesel, 11, k, 7)  # PL PESEL
    for _ in range(k):  # CH AHV: 756, 9 digits, EAN-13 check digit
        body = "756" + digits(r, 9)
        x = body + ean.calc_check_digit(body)
        out.append(f"{x[:3]}.{x[3:7]}.{x[7:11]}.{x[11:]}")
    for _ in range(k):  # US SSN, written form
        out.append(f"{r.integers(100, 665)}-{r.integers(10, 99)}-{r.integers(1000, 9999)}")
    return out[:n]


def phone_numbers(n: int) -> list[str]:
    r, out = rng(8), []
    fmts = [phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL]
    regions = ["DE", "FR", "NL", "GB", "US", "CH"]
    while len(out) < n:
        region = regions[len(out) % len(regions)]
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        national = str(example.national_number)
        cand = phonenumbers.parse(national[:3] + digits(r, len(national) - 3), region)
        if phonenumbers.is_valid_number(cand):
            out.append(phonenumbers.format_number(cand, fmts[len(out) % 2]))
    return out


FIRST = ["Anna", "Jörg", "Zoë", "Marie-Claire", "Seán", "Łukasz", "Inès", "Kofi", "Mei", "Ólafur"]
LAST = ["Okafor", "van der Berg", "O'Neill", "Müller-Lüdenscheid", "Nakamura", "García", "Dubois", "Novák"]


def person_names(n: int) -> list[str]:
    r = rng(9)
    out = [f"{FIRST[r.integers(len(FIRST))]} {LAST[r.integers(len(LAST))]}" for _ in range(n)]
    return [v.upper() if i % 7 == 0 else v for i, v in enumerate(out)]


# -- each kind ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values", "kind"),
    [
        ("contact", [f"user.{i}+tag@mail{i % 7}.example.org" for i in range(N)], "e-mail addresses"),
        ("account", ibans(N), "IBANs"),
        ("pan", card_numbers(N), "card numbers"),
        ("tin", national_ids(N), "national ids"),
        ("tel", phone_numbers(N), "phone numbers"),
        ("holder", person_names(N), "person names"),
        ("x", person_names(N), "person names"),  # values alone: "Firstname Lastname"
        ("customer_id", [f"C{i:06d}" for i in range(N)], "identifiers"),
        ("ref", [digits(rng(10), 4) + f"{i:08d}" for i in range(N)], "identifiers"),
    ],
    ids=[
        "email",
        "iban",
        "card",
        "national-id",
        "phone",
        "name-hint",
        "name-shape",
        "id-name",
        "long-digits",
    ],
)
def test_each_kind_is_detected(name, values, kind):
    found = detect(text(name, values))
    assert found is not None and found.kind == kind, found
    assert found.share >= THRESHOLD and found.sampled == N


def test_each_national_id_kind_alone_is_detected():
    ids = national_ids(N)
    k = N // 10 + 1
    for j in range(10):
        group = ids[j * k : (j + 1) * k]
        assert detect(text("x", group)) == Finding("national ids", 1.0, len(group)), j


def test_numbers_holding_card_numbers_ids_and_national_ids_are_caught():
    cards = [float(c) for c in card_numbers(N) if len(c) <= 16]
    assert detect(numbers("amount", cards)).kind == "card numbers"
    from stdnum.nl import bsn

    assert detect(numbers("bsn", [float(x) for x in _brute(bsn, 9, N, 11)])).kind == "national ids"
    accounts = rng(12).permutation(N) * 7919 + 4_300_000_000_000
    assert detect(numbers("acct", accounts)).kind == "identifiers"
    assert detect(numbers("customer_no", np.arange(N) + 1)).kind == "identifiers"


def test_names_need_a_hint_for_single_words_and_a_lower_threshold_with_it():
    firsts = [FIRST[i % len(FIRST)] + ("" if i % 3 else "x") for i in range(N)]
    assert detect(text("first_name", firsts)).kind == "person names"
    assert detect(text("word", firsts)) is None
    share = NAME_HINT_THRESHOLD + 0.05
    mixed = person_names(int(N * share)) + ["n/a 1"] * (N - int(N * share))
    assert detect(text("customer", mixed)).kind == "person names"
    assert detect(text("x", mixed)) is None
    assert name_hint("account_holder") and name_hint("lastName") and name_hint("Customer")
    assert not name_hint("product_name") and not name_hint("customer_id") and not name_hint("amount")
    assert id_hint("customerId") and id_hint("card_number") and id_hint("AccountNo") and not id_hint("paid")
    assert is_person_name("Jean-Luc O'Brien", single=False) and is_person_name(
        "J. van der Berg", single=False
    )
    assert not is_person_name("DE", single=True) and not is_person_name("Card 2", single=False)


def test_below_the_threshold_nothing_is_reported():
    emails = [f"u{i}@example.com" for i in range(N)]
    cut = int(N * THRESHOLD) - 1
    assert detect(text("x", emails[:cut] + ["no"] * (N - cut))) is None
    assert detect(text("x", emails[: cut + 1] + ["no"] * (N - cut - 1))).kind == "e-mail addresses"


# -- what must not be flagged ------------------------------------------------------------------


def test_ordinary_columns_are_not_flagged():
    r = rng(13)
    n = 5000
    cols = [
        numbers("amount", r.uniform(1e6, 9e6, n).round(2)),  # money in the millions
        numbers("amount_eur", r.integers(1_000_000, 9_999_999, n)),  # whole units in the millions
        numbers("balance", r.normal(0, 1e7, n)),
        numbers("age", r.integers(18, 95, n)),
        numbers("category", r.integers(0, 12, n)),
        numbers("merchant_category_id", r.integers(1, 20, n)),  # id-named, but a category
        numbers("created", r.integers(1_600_000_000, 1_800_000_000, n)),  # unix time
        numbers("created_ms", r.integers(1_600_000_000_000, 1_800_000_000_000, n)),
        numbers("yyyymmdd", 20240000 + r.integers(1, 13, n) * 100 + r.integers(1, 29, n)),
        Column("is_fraud", "bool", r.integers(0, 2, n).astype(np.float64)),
        text("country", r.choice(["DE", "FR", "NL", "CH", "US", "GB", "ES", "IT"], n)),
        text("currency", r.choice(["EUR", "USD", "CHF"], n)),
        text("date", [f"2024-{m:02d}-{d:02d}" for m, d in zip(r.integers(1, 13, n), r.integers(1, 29, n))]),
        text("booked", [f"{d:02d}.{m:02d}.2023" for m, d in zip(r.integers(1, 13, n), r.integers(1, 29, n))]),
        text("day", [f"{m:02d}/{d:02d}/2023" for m, d in zip(r.integers(1, 13, n), r.integers(1, 29, n))]),
        text("stamp", [f"2024-01-{d:02d}T10:{d:02d}:00" for d in r.integers(1, 29, n)]),
        text("flag", r.choice(["true", "false", "yes", "no"], n)),
        text("product", r.choice(["Gold Card", "Debit Card", "Credit Card", "Savings Account"], n)),
        text("city", r.choice(["Berlin", "New York", "San Francisco", "Den Haag", "Paris"], n)),
        text("postcode", [f"{p:05d}" for p in r.integers(1000, 99999, n)]),
        text("grade", r.choice(["A", "B", "C", "D"], n)),
        text("note", [f"order {i} shipped" for i in range(n)]),
    ]
    flagged = {c.name: detect(c) for c in cols if detect(c) is not None}
    assert flagged == {}


def test_bool_and_empty_columns_are_never_flagged():
    assert detect(Column("x", "bool", np.array([1.0, 0.0, np.nan]))) is None
    assert detect(text("email", [None, None])) is None


# -- sampling ----------------------------------------------------------------------------------


def test_the_sample_is_spread_over_the_column_and_deterministic():
    missing = np.zeros(10_000, dtype=bool)
    missing[::2] = True
    pos = sample_positions(missing, 100)
    assert len(pos) == 100 and pos[0] == 1 and pos[-1] == 9999 and not missing[pos].any()
    assert np.array_equal(pos, sample_positions(missing, 100))
    assert np.all(np.diff(pos) >= 98)
    # e-mail addresses in the second half only: a head sample would miss them, a spread one not
    half = [None] * 5000 + [f"u{i}@example.com" for i in range(5000)]
    assert detect(text("x", half), sample=50) == Finding("e-mail addresses", 1.0, 50)
    with pytest.raises(DataError, match="at least 1"):
        detect(text("x", half), sample=0)


def test_a_finding_holds_no_value():
    found = detect(text("contact", [f"secret.person{i}@example.com" for i in range(50)]))
    assert "secret" not in repr(found)


def test_strict_email_and_phone_shapes():
    assert is_email("a.b+c@sub.example.co.uk")
    for bad in ["a..b@example.com", "a@b", "a@example.c", "a b@example.com", ".a@example.com", "a@-x.com"]:
        assert not is_email(bad), bad
    assert is_phone_number("+49 30 901820") or is_phone_number("+49 30 9018200")
    assert not is_phone_number("2024-01-15") and not is_phone_number("20240115")


def test_detection_on_a_million_rows_reads_only_the_sample():
    n = 1_000_000
    col = text("contact", [f"user{i}@example.org" for i in range(n)])
    nums = numbers("amount", rng(14).uniform(0, 1e6, n))
    best_t = best_n = 1e9
    for _ in range(3):
        t = time.perf_counter()
        assert detect(col).kind == "e-mail addresses"
        best_t = min(best_t, time.perf_counter() - t)
        t = time.perf_counter()
        assert detect(nums) is None
        best_n = min(best_n, time.perf_counter() - t)
    assert best_t < 2.0 and best_n < 0.5, (best_t, best_n)
