"""Does a column look like personal data? A check on a sample of its cells, run at the data owner.

``detect(column)`` samples up to ``sample`` non-missing cells, spread evenly over the column
(deterministic, no randomness: the same table gives the same answer), and tests them kind by kind,
most specific first: e-mail addresses, IBANs, card numbers, national ids, phone numbers, person
names, identifiers. The first kind that at least :data:`THRESHOLD` of the sampled cells match is
reported (person names: :data:`NAME_HINT_THRESHOLD` when the column's name says it holds names).
Values are never logged, returned or put in a message: a :class:`Finding` holds the kind and the
share only.

Checks: e-mail by a strict regex; IBANs by their mod-97 check digits, card numbers by length
(13-19 digits), issuer digit (2-6) and the Luhn digit, national ids by their own check digits or
structure (``python-stdnum``), phone numbers with ``phonenumbers`` (international form, or the
national form of :data:`PHONE_REGIONS`); person names by shape (1-4 capitalised words of letters,
hyphens, apostrophes) with a name hint in the column name, or 2-4 such words in most cells of a
column of varied values; identifiers by an id-like column name and mostly distinct values, or by
distinct long digit strings. Number columns are checked only when their cells are whole numbers
(card numbers, national ids and account numbers stored as integers). ``docs/policy.md`` gives the
figures and what is deliberately not flagged (amounts, ages, dates, country codes, booleans).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from covault.ingest.errors import DataError
from covault.ingest.table import Column

THRESHOLD = 0.8  # share of the sampled non-missing cells that must match a kind
NAME_HINT_THRESHOLD = 0.6  # person names, when the column's name hints at names
ID_HINT_DISTINCT = 0.5  # identifiers: share of distinct values, column named like an id
ID_DISTINCT = 0.95  # identifiers: share of distinct values, long digit strings without a hint
NAME_DISTINCT = 0.2  # person names without a hint: share of distinct values (not a category)

KINDS: tuple[str, ...] = (
    "e-mail addresses",
    "IBANs",
    "card numbers",
    "national ids",
    "phone numbers",
    "person names",
    "identifiers",
)

# National formats of phone numbers are tried in these regions (international forms need none).
PHONE_REGIONS: tuple[str, ...] = ("DE", "FR", "NL", "BE", "GB", "CH", "AT", "IT", "ES", "US")


@dataclass(frozen=True)
class Finding:
    """A column looks like ``kind``: ``share`` of the ``sampled`` non-missing cells match
    (identifiers with an id-like name: the share of distinct values)."""

    kind: str
    share: float
    sampled: int = 0


# -- sampling -----------------------------------------------------------------------------------


def sample_positions(missing: np.ndarray, sample: int) -> np.ndarray:
    """Indices of up to ``sample`` non-missing cells, evenly spread from the first to the last."""
    present = np.flatnonzero(~missing)
    if len(present) <= sample:
        return present
    return present[np.linspace(0, len(present) - 1, sample).round().astype(np.int64)]


# -- column names -------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def name_tokens(name: str) -> list[str]:
    """``customerId``, ``Customer-ID``, ``customer_id`` -> ``['customer', 'id']``."""
    return [t for t in re.split(r"[^0-9a-z]+", _CAMEL.sub("_", name).lower()) if t]


_NAME_WORDS = {"name", "names", "firstname", "lastname", "surname", "fullname", "forename", "forenames"}
_NAME_WORDS |= {"givenname", "familyname", "maidenname", "nachname", "vorname", "nom", "prenom"}
_PERSON_WORDS = {"customer", "client", "holder", "cardholder", "accountholder", "owner", "person"}
_PERSON_WORDS |= {"patient", "employee", "beneficiary", "payee", "payer", "sender", "recipient"}
_PERSON_WORDS |= {"contact", "debtor", "creditor", "member", "insured", "signatory"}
# "product_name", "city_name": a name, not a person's
_NOT_PERSON = {"product", "file", "host", "user", "company", "bank", "merchant", "city", "street"}
_NOT_PERSON |= {"country", "brand", "branch", "category", "item", "model", "field", "column", "table"}
_NOT_PERSON |= {"region", "state", "town", "store", "shop", "firm", "business", "org", "organisation"}
_ID_WORDS = {"id", "ids", "no", "nr", "num", "number", "uuid", "guid", "account", "acct", "iban"}
_ID_COMPOUND = re.compile(
    r"^(?:user|customer|client|account|acct|patient|person|member|card|contract|policy|employee|party|tax)"
    r"(?:id|no|nr|num|number)$"
)
_PHONE_WORDS = {"phone", "tel", "telephone", "mobile", "cell", "msisdn", "fax"}


def name_hint(name: str) -> bool:
    """Whether a column named ``name`` is meant to hold person names (``first_name``,
    ``surname``, ``customer``, ``account_holder``; not ``product_name`` or ``customer_id``)."""
    tokens = name_tokens(name)
    if not tokens or any(t in _NOT_PERSON for t in tokens):
        return False
    return any(t in _NAME_WORDS for t in tokens) or tokens[-1] in _PERSON_WORDS


def id_hint(name: str) -> bool:
    """Whether a column named ``name`` is meant to hold identifiers (``customer_id``,
    ``AccountNo``, ``card_number``)."""
    tokens = name_tokens(name)
    return bool(tokens) and (tokens[-1] in _ID_WORDS or bool(_ID_COMPOUND.match(tokens[-1])))


def phone_hint(name: str) -> bool:
    """Whether a column named ``name`` is meant to hold phone numbers."""
    return any(t in _PHONE_WORDS for t in name_tokens(name))


# -- text checks --------------------------------------------------------------------------------

_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"  # \w: Unicode letters too (internationalised addresses, RFC 6531)
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
EMAIL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[^\W\d_]{{2,63}}$")
_IBAN_SHAPE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,32}$")
_CARD_SHAPE = re.compile(r"^[0-9][0-9 -]{11,24}[0-9]$")
_SEPARATORS = re.compile(r"[\s./-]")
_DATE = re.compile(
    r"^(?:(?:19|20)\d\d[-/.]?(?:0[1-9]|1[0-2])[-/.]?(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)?\d\d)(?:[ T].*)?$"
)
_PHONE_SHAPE = re.compile(r"^\+?[0-9\s().\-/]{6,24}$")
_NANP = re.compile(r"^(?:\+?1[\s.-]?)?\(?[2-9][0-9]{2}\)?[\s.-]?[2-9][0-9]{2}[\s.-]?[0-9]{4}$")
_LONG_CODE = re.compile(r"^(?:[A-Z]{1,4}[-/ ]?)?[0-9]{8,}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_NINO = re.compile(r"^(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D]$")
_SSN_SHAPE = re.compile(r"^[0-9]{3}-[0-9]{2}-[0-9]{4}$")
_PARTICLES = {"van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "la", "le"}
_PARTICLES |= {"ter", "ten", "zu", "bin", "ibn", "al", "el", "y", "e", "mc", "st"}


def _stdnum(name: str) -> Any:
    """The python-stdnum module ``name`` (a dependency of covault)."""
    try:
        import importlib

        return importlib.import_module(f"stdnum.{name}")
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise DataError(
            "PII detection needs python-stdnum and phonenumbers: pip install 'covault[pii]'"
        ) from e


def _phonenumbers() -> Any:
    try:
        import phonenumbers
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise DataError(
            "PII detection needs python-stdnum and phonenumbers: pip install 'covault[pii]'"
        ) from e
    return phonenumbers


def is_email(value: str) -> bool:
    """A whole cell that is one e-mail address (letters of any script, a dotted domain and a
    letter TLD)."""
    return len(value) <= 254 and bool(EMAIL.match(value))


def is_iban(value: str) -> bool:
    """An IBAN, with or without spaces, whose mod-97 check digits and length for its country hold."""
    compact = value.replace(" ", "").upper()
    return bool(_IBAN_SHAPE.match(compact)) and _stdnum("iban").is_valid(compact)


def _card_digits(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and _stdnum("luhn").is_valid(digits)


def is_card_number(value: str) -> bool:
    """13-19 digits (spaces or dashes between), issuer digit 2-6, a valid Luhn check digit."""
    return bool(_CARD_SHAPE.match(value)) and _card_digits(value.replace(" ", "").replace("-", ""))


@dataclass(frozen=True)
class NationalId:
    """One country's national id: ``shape`` of the compacted text (separators removed), the
    stdnum module that checks it, and ``digits``: its length where it may be stored as an
    integer (leading zeros lost), else None. ``formatted``: the raw text must match it too
    (ids whose check is weak are recognised only in their usual written form)."""

    label: str
    shape: re.Pattern[str]
    module: str | None
    digits: int | None = None
    formatted: re.Pattern[str] | None = None

    def valid(self, compact: str, raw: str | None = None) -> bool:
        if not self.shape.match(compact):
            return False
        if self.formatted is not None and (raw is None or not self.formatted.match(raw)):
            return False
        return True if self.module is None else bool(_stdnum(self.module).is_valid(compact))


NATIONAL_IDS: tuple[NationalId, ...] = (
    NationalId("DE tax id (IdNr)", re.compile(r"^[1-9][0-9]{10}$"), "de.idnr", digits=11),
    NationalId("FR NIR", re.compile(r"^[1-478][0-9]{4}[0-9AB][0-9]{9}$"), "fr.nir"),
    NationalId("NL BSN", re.compile(r"^[0-9]{9}$"), "nl.bsn", digits=9),
    NationalId("ES DNI", re.compile(r"^[0-9]{8}[A-Z]$"), "es.dni"),
    NationalId("ES NIE", re.compile(r"^[XYZ][0-9]{7}[A-Z]$"), "es.nie"),
    NationalId(
        "IT codice fiscale",
        re.compile(r"^[A-Z]{6}[0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]$"),
        "it.codicefiscale",
    ),
    NationalId("GB NINO", _NINO, None),
    NationalId("BE national number", re.compile(r"^[0-9]{11}$"), "be.nn", digits=11),
    NationalId("PL PESEL", re.compile(r"^[0-9]{11}$"), "pl.pesel", digits=11),
    NationalId("CH AHV number", re.compile(r"^756[0-9]{10}$"), "ch.ssn"),
    NationalId("US SSN", re.compile(r"^[0-9]{9}$"), "us.ssn", formatted=_SSN_SHAPE),
)


def is_national_id(value: str) -> bool:
    """A national id of one of :data:`NATIONAL_IDS`, in its written or compact form."""
    compact = _SEPARATORS.sub("", value).upper()
    if len(compact) < 9 or len(compact) > 16:
        return False
    return any(n.valid(compact, value) for n in NATIONAL_IDS)


def is_phone_number(value: str, regions: Sequence[str] = PHONE_REGIONS) -> bool:
    """A valid phone number: international (``+``, ``00``) or, with a trunk ``0`` or in North
    American written form, national in one of ``regions``. Dates and bare digit strings that do
    not start with 0 are not phone numbers here."""
    if not _PHONE_SHAPE.match(value) or _DATE.match(value):
        return False
    digits = sum(c.isdigit() for c in value)
    if not 7 <= digits <= 15:
        return False
    pn = _phonenumbers()
    if value.startswith("00"):
        tries: list[tuple[str, str | None]] = [("+" + value[2:], None)]
    elif value.startswith("+"):
        tries = [(value, None)]
    elif value.startswith("0"):
        tries = [(value, r) for r in regions if r != "US"]
    elif _NANP.match(value) and not value.isdigit() and "US" in regions:
        tries = [(value, "US")]
    else:
        return False
    for text, region in tries:
        try:
            if pn.is_valid_number(pn.parse(text, region)):
                return True
        except pn.NumberParseException:
            continue
    return False


def _name_word(word: str, caps_ok: bool) -> bool:
    if len(word) == 2 and word[1] == "." and word[0].isupper():
        return True  # an initial: "J."
    letters = word.replace("-", "").replace("'", "").replace("\u2019", "")
    if not letters.isalpha() or not word[0].isupper():
        return False
    if any(c.islower() for c in letters):
        return True
    return caps_ok and len(letters) >= 2  # "SMITH", in a name of several words


def is_person_name(value: str, *, single: bool) -> bool:
    """1-4 (``single``) or 2-4 words, each a capitalised word of letters (hyphens, apostrophes,
    initials and particles such as 'van' or 'de' allowed); all-capital words only in names of
    two words or more."""
    words = value.split()
    if not (1 if single else 2) <= len(words) <= 4:
        return False
    caps_ok = len(words) >= 2
    named = 0
    for w in words:
        if w.lower() in _PARTICLES and named:
            continue
        if not _name_word(w, caps_ok):
            return False
        named += 1
    return named >= (1 if single else 2)


def is_long_code(value: str) -> bool:
    """An account-like code: 8 or more digits (a prefix of up to 4 letters allowed), not a date;
    or a UUID."""
    if _UUID.match(value):
        return True
    return bool(_LONG_CODE.match(value.upper())) and not _DATE.match(value)


# -- detection ----------------------------------------------------------------------------------


def _share(values: Sequence[Any], test: Callable[[Any], bool]) -> float:
    return sum(1 for v in values if test(v)) / len(values) if len(values) else 0.0


def _distinct(values: Sequence[Any]) -> float:
    return len(set(values)) / len(values) if len(values) else 0.0


def _detect_text(name: str, cells: list[str], regions: Sequence[str]) -> Finding | None:
    n = len(cells)
    checks: tuple[tuple[str, Callable[[str], bool]], ...] = (
        ("e-mail addresses", is_email),
        ("IBANs", is_iban),
        ("card numbers", is_card_number),
        ("national ids", is_national_id),
        ("phone numbers", lambda v: is_phone_number(v, regions)),
    )
    for kind, test in checks:
        share = _share(cells, test)
        if share >= THRESHOLD:
            return Finding(kind, share, n)
    if name_hint(name):
        share = _share(cells, lambda v: is_person_name(v, single=True))
        if share >= NAME_HINT_THRESHOLD:
            return Finding("person names", share, n)
    else:
        share = _share(cells, lambda v: is_person_name(v, single=False))
        if share >= THRESHOLD and _distinct(cells) >= NAME_DISTINCT:
            return Finding("person names", share, n)
    return _identifiers(name, cells, _share(cells, is_long_code))


def _identifiers(name: str, cells: Sequence[Any], long_share: float) -> Finding | None:
    n = len(cells)
    distinct = _distinct(cells)
    if id_hint(name) and distinct >= ID_HINT_DISTINCT:
        return Finding("identifiers", distinct, n)
    if long_share >= THRESHOLD and distinct >= ID_DISTINCT:
        return Finding("identifiers", long_share, n)
    return None


def _is_timestamp(v: int) -> bool:
    """Unix time in seconds or milliseconds between 2001 and 2099: not an account number."""
    return 1_000_000_000 <= v < 4_100_000_000 or 1_000_000_000_000 <= v < 4_100_000_000_000


def _national_int(v: int) -> bool:
    """A national id stored as an integer (leading zeros lost) of one of the digit-only ids."""
    text = str(v)
    return any(
        i.valid(text.zfill(i.digits))
        for i in NATIONAL_IDS
        if i.digits is not None and i.formatted is None and len(text) <= i.digits
    )


def _detect_numbers(name: str, values: np.ndarray, regions: Sequence[str]) -> Finding | None:
    n = len(values)
    whole = values[(values == np.floor(values)) & (values >= 0) & (values < 1e19)]
    if len(whole) < THRESHOLD * n:
        return None  # amounts with cents, measurements: no personal number is a fraction
    ints = [int(v) for v in whole]

    def share(test: Callable[[int], bool]) -> float:
        return sum(1 for v in ints if test(v)) / n

    # 8 digits or more: ages, counts, amounts in whole units and category codes stay below
    if share(lambda v: v >= 10_000_000) >= THRESHOLD:
        checks: list[tuple[str, Callable[[int], bool]]] = [
            ("card numbers", lambda v: _card_digits(str(v))),
            ("national ids", _national_int),
        ]
        if phone_hint(name):
            checks.append(("phone numbers", lambda v: is_phone_number(f"+{v}", regions)))
        for kind, test in checks:
            found = share(test)
            if found >= THRESHOLD:
                return Finding(kind, found, n)
    return _identifiers(name, ints, share(lambda v: v >= 100_000_000 and not _is_timestamp(v)))


def detect(column: Column, *, sample: int = 2000, regions: Sequence[str] = PHONE_REGIONS) -> Finding | None:
    """The kind of personal data ``column`` looks like, or None (module docstring for the rules).

    Checks up to ``sample`` non-missing cells spread evenly over the column; ``regions``: where
    phone numbers in national form are looked for. Bool columns and empty columns are never
    flagged. Never logs or returns a cell's value."""
    if sample < 1:
        raise DataError(
            f"column {column.name!r}: PII detection needs a sample of at least 1 cell, got {sample}"
        )
    if column.kind == "bool":
        return None
    picked = column.values[sample_positions(column.missing, sample)]
    if len(picked) == 0:
        return None
    if column.kind == "text":
        return _detect_text(column.name, [str(v) for v in picked], regions)
    return _detect_numbers(column.name, picked.astype(np.float64), regions)
