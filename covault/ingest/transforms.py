"""The job's column transforms: raw columns in, the model's numeric features out.

A job's ``[transform]`` table gives each raw column a :class:`ColumnTransform`
(:func:`parse_transforms`). A numeric column goes through, in this order:

1. ``impute``: a missing cell takes a number (raw units) or ``"mean"`` (the pooled mean of
   the column's non-missing cells over every data owner, :mod:`covault.ingest.stats`); a
   missing cell without ``impute`` is a :class:`~covault.ingest.errors.DataError` naming the
   column and the row;
2. ``clip = [lo, hi]``;
3. ``log1p``: ``sign(x) log1p(|x|)`` (defined for negative values too);
4. ``scale``: multiply by a positive number;
5. the **auto scale**: the public power of two chosen by covault (:func:`factor_for`) so that
   the pooled maximum magnitude is below ``2^10`` (:data:`SCALE_EXPONENT`), far inside the
   fixed-point range ``2^15``.

A ``bool`` column is 0/1 and takes only ``impute``. A ``text`` column needs ``categories``
and becomes one 0/1 output per category, named ``column=category``; a missing cell or a
category not in the list gives all zeros. Bool and one-hot outputs keep factor 1.

:class:`Preprocessing` holds everything resolved (means, factors) and applies it to a
:class:`~covault.ingest.table.Table` (:meth:`Preprocessing.apply`); the exported ONNX model
carries it as JSON (:meth:`Preprocessing.to_json`). See ``docs/transforms.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from covault.deploy.config import ConfigError
from covault.ingest.errors import DataError
from covault.ingest.table import KINDS, Table

SCALE_EXPONENT = 10  # auto scale: pooled |x| < 2^SCALE_EXPONENT after the factor
EMPTY_EXPONENT = -64  # exponent of an empty, all-missing or all-zero column (and of |x| < 2^-64)
MAX_EXPONENT = 1100  # above every float64 exponent (2^1024)
KEYS = ("impute", "clip", "log1p", "scale", "categories")
JSON_VERSION = 1


@dataclass(frozen=True)
class ColumnTransform:
    """What happens to one raw column (module docstring for the order)."""

    impute: float | str | None = None  # a number (raw units) or "mean"
    clip: tuple[float, float] | None = None
    log1p: bool = False  # sign(x) * log1p(|x|)
    scale: float | None = None
    categories: tuple[str, ...] | None = None  # one-hot; missing or unknown -> all zeros

    def to_json(self) -> dict[str, Any]:
        """The keys that are set, as in the job file."""
        out: dict[str, Any] = {}
        if self.impute is not None:
            out["impute"] = self.impute
        if self.clip is not None:
            out["clip"] = list(self.clip)
        if self.log1p:
            out["log1p"] = True
        if self.scale is not None:
            out["scale"] = self.scale
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out


NONE = ColumnTransform()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_one(col: str, raw: Any) -> ColumnTransform:
    where = f"transform.{col}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table such as {{ log1p = true }}, got {type(raw).__name__}")
    for key in raw:
        if key not in KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (keys: {', '.join(KEYS)})")
    impute = raw.get("impute")
    if impute is not None and not (_number(impute) or impute == "mean"):
        raise ConfigError(f'{where}.impute: must be a finite number or "mean", got {impute!r}')
    clip = raw.get("clip")
    if clip is not None:
        if not isinstance(clip, list | tuple) or len(clip) != 2 or not all(_number(v) for v in clip):
            raise ConfigError(f"{where}.clip: must be [low, high] (two finite numbers), got {clip!r}")
        if not clip[0] < clip[1]:
            raise ConfigError(f"{where}.clip: low {clip[0]} must be below high {clip[1]}")
        clip = (float(clip[0]), float(clip[1]))
    log1p = raw.get("log1p", False)
    if not isinstance(log1p, bool):
        raise ConfigError(f"{where}.log1p: must be true or false, got {log1p!r}")
    scale = raw.get("scale")
    if scale is not None and not (_number(scale) and scale > 0):
        raise ConfigError(f"{where}.scale: must be a positive finite number, got {scale!r}")
    cats = raw.get("categories")
    if cats is not None:
        if not isinstance(cats, list | tuple) or not cats:
            raise ConfigError(f"{where}.categories: must be a non-empty list of strings")
        if not all(isinstance(c, str) and c.strip() == c and c for c in cats):
            raise ConfigError(
                f"{where}.categories: every category must be a non-empty string without "
                "surrounding spaces (cells are stripped before matching)"
            )
        if len(set(cats)) != len(cats):
            raise ConfigError(f"{where}.categories: a category is listed twice")
        others = [k for k in ("impute", "clip", "log1p", "scale") if k in raw]
        if others:
            raise ConfigError(f"{where}.{others[0]}: does not apply to a column with categories (text)")
        cats = tuple(cats)
    return ColumnTransform(
        impute=float(impute) if _number(impute) else impute,
        clip=clip,
        log1p=log1p,
        scale=None if scale is None else float(scale),
        categories=cats,
    )


def parse_transforms(raw: Any) -> dict[str, ColumnTransform]:
    """The job file's ``[transform]`` table (None: no transforms) as ``{column: transform}``;
    a :class:`~covault.deploy.config.ConfigError` names the key (``transform.COL.key``)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"transform: must be a table of column = {{ ... }}, got {type(raw).__name__}")
    return {str(col): _parse_one(str(col), spec) for col, spec in raw.items()}


def _check_kind(name: str, kind: str, t: ColumnTransform) -> None:
    """Refuse a transform that does not fit the column's kind (DataError naming the column)."""
    if kind not in KINDS:
        raise DataError(f"column {name!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if kind == "text":
        if t.categories is None:
            raise DataError(f"column {name!r} holds text; give it categories in [transform]")
        return
    if t.categories is not None:
        raise DataError(f"column {name!r} holds {kind}s, not text; categories apply to text columns only")
    if kind == "bool":
        extra = [k for k in ("clip", "log1p", "scale") if getattr(t, k) not in (None, False)]
        if extra:
            raise DataError(
                f"column {name!r} holds booleans (0/1); transform.{name}.{extra[0]} does not apply"
            )


def output_names(
    features: Sequence[str], transforms: Mapping[str, ColumnTransform], kinds: Mapping[str, str]
) -> list[str]:
    """The model's feature columns, in order: one per number/bool feature, ``column=category``
    per category of a text feature. DataError for a transform that does not fit a column's kind;
    ConfigError for a transform of a column that is not a feature."""
    extra = [c for c in transforms if c not in features]
    if extra:
        raise ConfigError(
            f"transform.{extra[0]}: column {extra[0]!r} is not a feature of the job "
            f"(features: {', '.join(features)})"
        )
    out: list[str] = []
    for name in features:
        if name not in kinds:
            raise DataError(f"feature {name!r}: its kind is unknown (no data owner has the column)")
        t = transforms.get(name, NONE)
        _check_kind(name, kinds[name], t)
        if kinds[name] == "text":
            out += [f"{name}={c}" for c in t.categories or ()]
        else:
            out.append(name)
    return out


# -- numbers ------------------------------------------------------------------------------------
def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) log1p(|x|)``."""
    return np.sign(x) * np.log1p(np.abs(x))


def declared(values: np.ndarray, t: ColumnTransform) -> np.ndarray:
    """clip -> log1p -> scale of non-missing float64 values (no impute, no auto scale)."""
    v = np.asarray(values, dtype=np.float64)
    if t.clip is not None:
        v = np.clip(v, t.clip[0], t.clip[1])
    if t.log1p:
        v = signed_log1p(v)
    if t.scale is not None:
        v = v * t.scale
    return v


def exponent_of(values: np.ndarray) -> int:
    """The smallest ``e`` with ``max |x| < 2^e`` over the non-missing ``values``
    (:data:`EMPTY_EXPONENT` when there are none, all are zero or all are below ``2^-64``)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not v.size:
        return EMPTY_EXPONENT
    m = float(np.abs(v).max())
    if not math.isfinite(m):
        raise DataError("an infinite value cannot be scaled")
    if m < 2.0**EMPTY_EXPONENT:
        return EMPTY_EXPONENT
    return int(np.frexp(m)[1])


def factor_for(exponent: int) -> float:
    """The auto scale factor of a column whose pooled magnitude is below ``2^exponent``:
    ``2^-(exponent - 10)`` above ``2^10``, else 1."""
    e = int(exponent)
    return 2.0 ** -(e - SCALE_EXPONENT) if e > SCALE_EXPONENT else 1.0


@dataclass(frozen=True)
class LocalStatistics:
    """One owner's part of the secure statistics (:func:`local_statistics`)."""

    mean_columns: tuple[str, ...]  # raw columns with impute = "mean", in input order
    scaled_columns: tuple[str, ...]  # number columns (each one output that takes an auto scale)
    exponents: np.ndarray  # int64: raw exponent per mean column, then output exponent per scaled column
    sums: np.ndarray  # float64 per mean column: sum of the non-missing raw cells
    counts: np.ndarray  # int64 per mean column: number of non-missing cells


def statistic_columns(
    inputs: Sequence[tuple[str, str]], transforms: Mapping[str, ColumnTransform]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(mean_columns, scaled_columns)`` of :class:`LocalStatistics`, public from the job."""
    means = tuple(n for n, k in inputs if k != "text" and transforms.get(n, NONE).impute == "mean")
    scaled = tuple(n for n, k in inputs if k == "number")
    return means, scaled


def local_statistics(
    table: Table, inputs: Sequence[tuple[str, str]], transforms: Mapping[str, ColumnTransform]
) -> LocalStatistics:
    """This owner's exponents, sums and counts (a column absent from ``table`` contributes
    nothing: vertical jobs, where each owner holds its own columns).

    The output exponent of a scaled column covers its non-missing cells after clip, log1p and
    scale, and a numeric ``impute`` value whenever one is given (it is public). A ``"mean"``
    needs no such term: the transforms are monotone, so the transformed mean lies between
    the transformed minimum and maximum."""
    mean_cols, scaled = statistic_columns(inputs, transforms)
    exps: list[int] = []
    sums, counts = [], []
    for name in mean_cols:
        v = table[name].values if name in table else np.empty(0)
        exps.append(exponent_of(v))
        ok = ~np.isnan(v)
        sums.append(float(v[ok].sum()))
        counts.append(int(ok.sum()))
    for name in scaled:
        t = transforms.get(name, NONE)
        v = table[name].values if name in table else np.empty(0)
        v = v[~np.isnan(v)]
        if isinstance(t.impute, float):
            v = np.append(v, t.impute)
        try:
            exps.append(exponent_of(declared(v, t)))
        except DataError:
            raise DataError(f"column {name!r}: the transforms give an infinite value") from None
    return LocalStatistics(
        mean_cols,
        scaled,
        np.asarray(exps, dtype=np.int64),
        np.asarray(sums, dtype=np.float64),
        np.asarray(counts, dtype=np.int64),
    )


# -- the resolved preprocessing -----------------------------------------------------------------
@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn raw columns into the model's inputs (module docstring)."""

    inputs: tuple[tuple[str, str], ...]  # (raw column name, kind) in job feature order
    transforms: dict[str, ColumnTransform]
    means: dict[str, float]  # resolved "mean" imputations (raw units)
    factors: dict[str, float]  # output column -> auto scale factor (power of two)
    outputs: tuple[str, ...]  # output column names (model feature order)

    def __post_init__(self) -> None:
        kinds = dict(self.inputs)
        want = output_names([n for n, _ in self.inputs], self.transforms, kinds)
        if tuple(want) != tuple(self.outputs):
            raise DataError(f"preprocessing: outputs {list(self.outputs)} are not those of its inputs {want}")
        for name, _ in self.inputs:
            if self.transforms.get(name, NONE).impute == "mean" and name not in self.means:
                raise DataError(f"preprocessing: column {name!r} imputes the mean, which is not resolved")
        for out in self.outputs:
            f = self.factors.get(out)
            if f is None or not (f > 0 and math.isfinite(f) and math.frexp(f)[0] == 0.5):
                raise DataError(f"preprocessing: output {out!r} needs a power-of-two factor, got {f!r}")

    @property
    def names(self) -> list[str]:
        """The raw input columns, in order."""
        return [n for n, _ in self.inputs]

    def transform_of(self, name: str) -> ColumnTransform:
        return self.transforms.get(name, NONE)

    def impute_value(self, name: str) -> float | None:
        """The resolved imputation of raw column ``name`` (raw units), or None."""
        imp = self.transform_of(name).impute
        return self.means[name] if imp == "mean" else imp  # type: ignore[return-value]

    def factor(self, name: str) -> float:
        """Declared ``scale`` times the auto scale factor of a numeric column."""
        t = self.transform_of(name)
        return (1.0 if t.scale is None else t.scale) * self.factors[name]

    def apply(self, table: Table) -> np.ndarray:
        """float64 ``(rows, len(outputs))``; DataError for a missing column, a text/number
        mismatch or a missing cell without ``impute`` (naming source, column and 1-based row)."""
        out = np.empty((table.n_rows, len(self.outputs)), dtype=np.float64)
        j = 0
        for name, kind in self.inputs:
            col = table[name]
            t = self.transform_of(name)
            if (col.kind == "text") != (kind == "text"):
                raise DataError(f"{table.source}: column {name!r} holds {col.kind}, the model expects {kind}")
            if kind == "text":
                cats = t.categories or ()
                index = {c: i for i, c in enumerate(cats)}
                hot = np.zeros((table.n_rows, len(cats)), dtype=np.float64)
                for r, v in enumerate(col.values):
                    i = index.get(v) if v is not None else None
                    if i is not None:
                        hot[r, i] = 1.0
                out[:, j : j + len(cats)] = hot
                j += len(cats)
                continue
            v = col.values.astype(np.float64, copy=True)
            miss = np.isnan(v)
            if miss.any():
                fill = self.impute_value(name)
                if fill is None:
                    r = int(np.flatnonzero(miss)[0])
                    raise DataError(
                        f"{table.source}: column {name!r}, row {r + 1}: missing cell and no "
                        f"impute for it in [transform]"
                    )
                v[miss] = fill
            if kind == "bool":
                out[:, j] = v
            else:
                out[:, j] = declared(v, t) * self.factors[name]
            j += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_json` reads it back)."""
        return {
            "version": JSON_VERSION,
            "inputs": [[n, k] for n, k in self.inputs],
            "transforms": {n: t.to_json() for n, t in self.transforms.items()},
            "means": dict(self.means),
            "factors": dict(self.factors),
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Preprocessing:
        """Read :meth:`to_json`'s dict back (DataError when it is malformed)."""
        try:
            if raw["version"] != JSON_VERSION:
                raise DataError(f"preprocessing: version {raw['version']!r} is not {JSON_VERSION}")
            inputs = tuple((str(n), str(k)) for n, k in raw["inputs"])
            means = {str(k): float(v) for k, v in raw["means"].items()}
            factors = {str(k): float(v) for k, v in raw["factors"].items()}
            outputs = tuple(str(o) for o in raw["outputs"])
            transforms = parse_transforms(raw["transforms"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"preprocessing: malformed description ({type(exc).__name__}: {exc})") from None
        return cls(inputs, transforms, means, factors, outputs)


def build_preprocessing(
    inputs: Iterable[tuple[str, str]],
    transforms: Mapping[str, ColumnTransform],
    exponents: np.ndarray,
    means: Mapping[str, float],
) -> Preprocessing:
    """The Preprocessing from the pooled exponents (as :class:`LocalStatistics` orders them)
    and the resolved means."""
    inputs = tuple((str(n), str(k)) for n, k in inputs)
    transforms = dict(transforms)
    mean_cols, scaled = statistic_columns(inputs, transforms)
    outputs = tuple(output_names([n for n, _ in inputs], transforms, dict(inputs)))
    e = np.asarray(exponents, dtype=np.int64).reshape(-1)
    if len(e) != len(mean_cols) + len(scaled):
        raise DataError(f"preprocessing: {len(e)} exponents for {len(mean_cols) + len(scaled)} statistics")
    factors = dict.fromkeys(outputs, 1.0)
    factors.update({n: factor_for(x) for n, x in zip(scaled, e[len(mean_cols) :])})
    return Preprocessing(inputs, transforms, dict(means), factors, outputs)


def fit_plain(
    tables: Sequence[Table], inputs: Sequence[tuple[str, str]], transforms: Mapping[str, ColumnTransform]
) -> Preprocessing:
    """The Preprocessing the secure statistics (:func:`covault.ingest.stats.fit_preprocessing`)
    give, computed in the clear from every owner's table (tests, plaintext runs)."""
    parts = [local_statistics(t, inputs, transforms) for t in tables]
    mean_cols, _ = statistic_columns(inputs, transforms)
    exps = np.max([p.exponents for p in parts], axis=0) if parts else np.empty(0, np.int64)
    sums = np.sum([p.sums for p in parts], axis=0) if parts else np.zeros(0)
    counts = np.sum([p.counts for p in parts], axis=0) if parts else np.zeros(0, np.int64)
    means = {}
    for i, name in enumerate(mean_cols):
        if not counts[i]:
            raise DataError(no_values(name))
        means[name] = float(sums[i] / counts[i])
    return build_preprocessing(inputs, transforms, exps, means)


def no_values(name: str) -> str:
    """The message for a "mean" imputation of a column without a single value."""
    return f'column {name!r}: no data owner has a value in it, so impute = "mean" has nothing to average'
