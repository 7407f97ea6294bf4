"""Column transforms in the clear: parsing, output names, Preprocessing.apply against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from covault.deploy.config import ConfigError
from covault.ingest.errors import DataError
from covault.ingest.table import Column, Table
from covault.ingest.transforms import (
    EMPTY_EXPONENT,
    ColumnTransform,
    Preprocessing,
    exponent_of,
    factor_for,
    fit_plain,
    local_statistics,
    output_names,
    parse_transforms,
)

NAN = float("nan")


def num(name, values):
    return Column(name, "number", np.array(values, dtype=np.float64))


def flag(name, values):
    return Column(name, "bool", np.array(values, dtype=np.float64))


def text(name, values):
    return Column(name, "text", np.array(values, dtype=object))


RAW = {
    "amount": {"log1p": True, "impute": "mean"},
    "country": {"categories": ["DE", "FR", "NL"]},
    "age": {"clip": [18, 100], "impute": 40},
    "x": {"scale": 1e-6},
}
INPUTS = (("amount", "number"), ("age", "number"), ("country", "text"), ("x", "number"), ("vip", "bool"))


def owners():
    a = Table(
        [
            num("amount", [1500.0, NAN, -20.0, 3_000_000.0]),
            num("age", [17.0, 45.0, NAN, 120.0]),
            text("country", ["DE", "NL", None, "US"]),
            num("x", [2_000_000.0, 1.0, 0.0, -5.0]),
            flag("vip", [1.0, 0.0, 0.0, 1.0]),
        ],
        "data file a.csv",
    )
    b = Table(
        [
            num("amount", [10.0, 250_000.0]),
            num("age", [30.0, 64.0]),
            text("country", ["FR", "FR"]),
            num("x", [0.001, 7_500_000.0]),
            flag("vip", [0.0, 1.0]),
        ],
        "data file b.csv",
    )
    return a, b


def test_parse_transforms_reads_the_job_table():
    t = parse_transforms(RAW)
    assert t["amount"] == ColumnTransform(impute="mean", log1p=True)
    assert t["country"].categories == ("DE", "FR", "NL")
    assert t["age"] == ColumnTransform(impute=40.0, clip=(18.0, 100.0))
    assert t["x"].scale == 1e-6
    assert parse_transforms(None) == {}
    assert parse_transforms({"a": t["age"].to_json()})["a"] == t["age"]


@pytest.mark.parametrize(
    "raw,where",
    [
        ({"a": {"log": True}}, r"transform\.a\.log: unknown key"),
        ({"a": {"impute": "median"}}, r"transform\.a\.impute: "),
        ({"a": {"impute": True}}, r"transform\.a\.impute: "),
        ({"a": {"impute": math.inf}}, r"transform\.a\.impute: "),
        ({"a": {"clip": [1]}}, r"transform\.a\.clip: "),
        ({"a": {"clip": [5, 1]}}, r"transform\.a\.clip: low 5 must be below high 1"),
        ({"a": {"log1p": "yes"}}, r"transform\.a\.log1p: "),
        ({"a": {"scale": 0}}, r"transform\.a\.scale: "),
        ({"a": {"scale": "big"}}, r"transform\.a\.scale: "),
        ({"a": {"categories": []}}, r"transform\.a\.categories: "),
        ({"a": {"categories": ["x", "x"]}}, r"transform\.a\.categories: .*twice"),
        ({"a": {"categories": [" x"]}}, r"transform\.a\.categories: "),
        ({"a": {"categories": ["x"], "scale": 2}}, r"transform\.a\.scale: does not apply"),
        ({"a": 3}, r"transform\.a: must be a table"),
        ([1, 2], r"transform: must be a table"),
    ],
)
def test_parse_errors_name_the_key(raw, where):
    with pytest.raises(ConfigError, match=where):
        parse_transforms(raw)


def test_output_names_one_hot_and_kind_checks():
    t = parse_transforms(RAW)
    kinds = dict(INPUTS)
    names = output_names([n for n, _ in INPUTS], t, kinds)
    assert names == ["amount", "age", "country=DE", "country=FR", "country=NL", "x", "vip"]
    with pytest.raises(DataError, match=r"column 'city' holds text; give it categories in \[transform\]"):
        output_names(["city"], {}, {"city": "text"})
    with pytest.raises(DataError, match=r"column 'age' holds numbers.*categories apply to text"):
        output_names(["age"], {"age": ColumnTransform(categories=("a",))}, {"age": "number"})
    with pytest.raises(DataError, match=r"column 'vip' holds booleans.*transform\.vip\.log1p"):
        output_names(["vip"], {"vip": ColumnTransform(log1p=True)}, {"vip": "bool"})
    with pytest.raises(ConfigError, match=r"transform\.ghost: column 'ghost' is not a feature"):
        output_names(["age"], {"ghost": ColumnTransform()}, {"age": "number"})


def test_exponents_and_factors():
    assert exponent_of(np.array([NAN, 1000.0, -3.0])) == 10  # 1000 < 2^10
    assert exponent_of(np.array([1024.0])) == 11  # strictly below 2^e
    assert exponent_of(np.array([-3_000_000.0])) == 22
    assert exponent_of(np.array([1e-3])) == -9
    for empty in (np.array([]), np.array([NAN, NAN]), np.zeros(3), np.array([1e-30])):
        assert exponent_of(empty) == EMPTY_EXPONENT
    assert factor_for(10) == 1.0 and factor_for(-64) == 1.0
    assert factor_for(11) == 0.5 and factor_for(22) == 2.0**-12


def test_apply_matches_hand_computed_numpy():
    a, b = owners()
    t = parse_transforms(RAW)
    pre = fit_plain([a, b], INPUTS, t)
    # pooled mean of amount's non-missing raw cells
    mean = (1500 - 20 + 3_000_000 + 10 + 250_000) / 5
    assert pre.means == {"amount": pytest.approx(mean, rel=1e-15)}
    # factors: amount log1p(3e6) = 14.9 < 2^4 -> 1; age clip <= 100 -> 1; x: 7.5 after 1e-6 -> 1
    assert pre.factors == dict.fromkeys(pre.outputs, 1.0)
    got = pre.apply(a)
    lg = lambda v: np.sign(v) * np.log1p(np.abs(v))  # noqa: E731
    want = np.array(
        [
            [lg(1500.0), 18.0, 1, 0, 0, 2.0, 1.0],
            [lg(mean), 45.0, 0, 0, 1, 1e-6, 0.0],
            [lg(-20.0), 40.0, 0, 0, 0, 0.0, 0.0],  # missing country: zeros
            [lg(3e6), 100.0, 0, 0, 0, -5e-6, 1.0],  # unknown "US": zeros
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert got.shape == (a.n_rows, len(pre.outputs))


def test_auto_scale_brings_millions_below_2_to_the_10():
    a, b = owners()
    inputs = (("amount", "number"), ("x", "number"), ("vip", "bool"))
    pre = fit_plain([a, b], inputs, {"amount": ColumnTransform(impute=0.0)})
    assert pre.factors == {"amount": 2.0**-12, "x": 2.0**-13, "vip": 1.0}  # 3e6 < 2^22, 7.5e6 < 2^23
    out = np.vstack([pre.apply(a), pre.apply(b)])
    assert np.abs(out).max() < 2.0**10
    np.testing.assert_allclose(out[:4, 1], np.array([2e6, 1, 0, -5]) * 2.0**-13)
    np.testing.assert_allclose(out[1, 0], 0.0)  # impute 0 before the factor


def test_numeric_impute_value_counts_toward_the_factor():
    t = Table([num("v", [1.0, 2.0])], "s")
    pre = fit_plain([t], (("v", "number"),), {"v": ColumnTransform(impute=5000.0)})
    assert pre.factors == {"v": 2.0**-3}  # 5000 < 2^13 although no cell is missing


def test_missing_cell_without_impute_names_column_and_row():
    a, _ = owners()
    pre = fit_plain([a.select(["x", "age"])], (("x", "number"), ("age", "number")), {})
    with pytest.raises(DataError, match=r"data file a\.csv: column 'age', row 3: missing cell and no impute"):
        pre.apply(a)


def test_text_where_a_number_is_expected_and_absent_columns():
    a, _ = owners()
    pre = fit_plain([a], (("x", "number"),), {})
    bad = Table([text("x", ["1"] * 4)], "data file c.csv")
    with pytest.raises(DataError, match=r"data file c\.csv: column 'x' holds text, the model expects number"):
        pre.apply(bad)
    with pytest.raises(DataError, match=r"has no column 'x'"):
        pre.apply(Table([num("y", [1.0])], "data file d.csv"))


def test_mean_of_a_column_without_values_is_refused():
    t = Table([num("v", [NAN, NAN])], "s")
    with pytest.raises(DataError, match=r"column 'v': no data owner has a value in it"):
        fit_plain([t], (("v", "number"),), {"v": ColumnTransform(impute="mean")})


def test_mean_imputation_does_not_need_the_missing_cells_for_the_exponent():
    """The imputed mean lies inside the range of the values: it never raises the exponent."""
    t = Table([num("v", [NAN, 3000.0, -5000.0])], "s")
    st = local_statistics(t, (("v", "number"),), {"v": ColumnTransform(impute="mean")})
    assert st.mean_columns == ("v",) and st.scaled_columns == ("v",)
    assert list(st.exponents) == [13, 13] and list(st.counts) == [2] and list(st.sums) == [-2000.0]


def test_json_round_trip_and_validation():
    a, b = owners()
    pre = fit_plain([a, b], INPUTS, parse_transforms(RAW))
    again = Preprocessing.from_json(pre.to_json())
    assert again == pre
    np.testing.assert_array_equal(again.apply(b), pre.apply(b))
    raw = pre.to_json()
    with pytest.raises(DataError, match="malformed"):
        Preprocessing.from_json({k: v for k, v in raw.items() if k != "factors"})
    with pytest.raises(DataError, match="power-of-two factor"):
        Preprocessing.from_json({**raw, "factors": {**raw["factors"], "x": 0.3}})
    with pytest.raises(DataError, match="mean, which is not resolved"):
        Preprocessing.from_json({**raw, "means": {}})
