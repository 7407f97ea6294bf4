"""The job file: a consortium config plus what to train on which data.

```toml
protocol = "rep3"                 # or "2pc"; provider = "dealer" (2pc only, the default)
task = "logistic_regression"      # | "linear_regression" | "mlp"
label = "is_fraud"
partition = "horizontal"          # | "vertical": parties hold different columns of the same rows
id = "patient_id"                 # vertical only: the row identifier, in every party's data
compute = ["bank_a", "bank_b", "bank_c"]
reveal_model_to = ["bank_a"]      # default: every data party; [] with model_store: nobody
model_store = "fraud"             # optional: each compute party keeps its shares, encrypted at rest
model_dir = "models"              # where (default: models/ next to the job file; docs/serving.md)
answer = "decision"               # optional, with model_store: clients receive the class only
test_fraction = 0.2               # where a party gives no `test` file
seed = 7
model_out = "model.onnx"          # ONNX file written at every party that receives the model
features = ["amount", "country"]  # optional: by name (default: every column the policies allow)
owners = ["bank_a", "bank_b"]     # optional: the data owners (default: the parties with data)
[transform]                       # optional, per column (covault.ingest.transforms)
country = { categories = ["DE", "FR"] }
[model]                           # hyper-parameters (defaults: TASKS)
epochs = 10
[parties.bank_a]
region = "EU"                     # where the party is (owners' policies may restrict regions)
data = "bank_a.csv"               # training rows: CSV, Parquet or { url = "sqlite:///x.db", table = "tx" }
test = "bank_a_test.csv"          # optional held-out rows
policy = "bank_a.policy.toml"     # optional: the owner's policy (covault.ingest.policy)
```

A party running on its own host keeps ``data``, ``test`` and ``policy`` in a local file that is
never sent (``covault party job.toml --as bank_a --local bank_a.local.toml``,
:func:`bind_local`); the shared job then lists the data parties in ``owners``.

:func:`load_job` validates everything that can be checked without the data (keys, values,
party roles, hyper-parameters) and raises :class:`~covault.jobs.errors.JobError` naming the
key or party. Data files are checked by their owners when the job runs (another party's file
is not on this host). A job whose correlation provider needs a dealer (``2pc`` with the default
``provider = "dealer"``) and names none gets a dealer party named ``"dealer"``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

from covault import schemes
from covault.deploy.config import ConfigError, ConsortiumConfig, parse_config, read_toml
from covault.errors import ProtocolError
from covault.jobs.errors import JobError
from covault.jobs.tracking import mlflow_table
from covault.randomness.providers import needs_dealer
from covault.runtime import DEFAULT_DEALER

JOB_KEYS = {
    "task",
    "label",
    "partition",
    "id",
    "reveal_model_to",
    "test_fraction",
    "seed",
    "model_out",
    "model",
    "features",
    "transform",
    "owners",
    "threshold",
    "model_store",
    "model_dir",
    "answer",
    "privacy",
    "mlflow",
}
PRIVACY_KEYS = {"epsilon", "delta", "max_grad_norm", "noise_multiplier", "colluding", "feature_bound"}
DP_TASKS = ("logistic_regression", "linear_regression", "mlp")
PARTY_DATA_KEYS = {"data", "test", "policy"}
SOURCE_KEYS = {"url", "table", "query", "password_env"}
PARTITIONS = ("horizontal", "vertical")

_COMMON = {"epochs", "learning_rate", "batch_size", "momentum", "alpha", "standardize", "shuffle"}
TASKS: dict[str, dict[str, Any]] = {
    "logistic_regression": {
        "kind": "classification",
        "defaults": {"epochs": 10, "learning_rate": 0.1, "batch_size": 64},
        "keys": _COMMON | {"penalty", "C", "sigmoid", "class_weight", "lr_schedule"},
    },
    "linear_regression": {
        "kind": "regression",
        "defaults": {"epochs": 10, "learning_rate": 0.05, "batch_size": 64},
        "keys": _COMMON | {"lr_schedule"},
    },
    "mlp": {
        "kind": "classification",
        "defaults": {"hidden": (32,), "epochs": 10, "learning_rate": 0.05, "batch_size": 64, "momentum": 0.9},
        "keys": _COMMON | {"hidden", "n_classes", "optimizer", "betas", "eps"},
    },
}


@dataclass(frozen=True, eq=False)
class Job:
    """A validated job. Party roles: ``compute`` (hold shares), ``dealer`` (2pc only),
    ``data_parties`` (own rows; may also compute), ``reveal_model_to`` (receive the model,
    metrics and loss curve)."""

    path: Path | None
    config: ConsortiumConfig
    task: str
    label: str
    partition: str
    id_column: str | None
    data: dict[str, Path]
    test: dict[str, Path]
    reveal_model_to: tuple[str, ...]
    test_fraction: float
    seed: int
    model_out: Path | None
    model: dict[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] | None = None
    transforms: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Path] = field(default_factory=dict)
    owners: tuple[str, ...] = ()
    threshold: float = 0.5
    model_store: str | None = None
    model_dir: Path | None = None
    answer: str = "scores"
    privacy: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "job"

    @property
    def protocol(self) -> str:
        return self.config.protocol

    @property
    def provider(self) -> str | None:
        """The correlated-randomness provider (None: the protocol takes none)."""
        return self.config.provider

    @property
    def compute(self) -> tuple[str, ...]:
        return self.config.compute

    @property
    def dealer(self) -> str | None:
        return self.config.dealer

    @property
    def data_parties(self) -> tuple[str, ...]:
        """Parties that own rows: ``owners``, else those with data, in the order of the job file."""
        return self.owners or tuple(self.data)

    @property
    def data_only(self) -> tuple[str, ...]:
        """Data parties that are not compute parties (they hold no shares)."""
        return tuple(p for p in self.data_parties if p not in self.compute)

    @property
    def regions(self) -> dict[str, str | None]:
        """Each party's region label from the consortium config (None where it gives none)."""
        return {p: c.region for p, c in self.config.parties.items()}

    @property
    def kind(self) -> str:
        return TASKS[self.task]["kind"]

    @property
    def n_classes(self) -> int | None:
        if self.kind != "classification":
            return None
        return int(self.model.get("n_classes", 2))

    def estimator(self):
        """A fresh secure estimator with the job's hyper-parameters."""
        from covault import ml

        cls = {
            "logistic_regression": ml.LogisticRegression,
            "linear_regression": ml.LinearRegression,
            "mlp": ml.MLPClassifier,
        }[self.task]
        return cls(**self.model, seed=self.seed)

    def reference(self, **override: Any):
        """The float64 plaintext twin of :meth:`estimator` (same hyper-parameters)."""
        from covault import ml

        cls = {
            "logistic_regression": ml.ReferenceLogisticRegression,
            "linear_regression": ml.ReferenceLinearRegression,
            "mlp": ml.ReferenceMLPClassifier,
        }[self.task]
        return cls(**{**self.model, **override}, seed=self.seed)

    def _agreed(self) -> dict[str, Any]:
        """Everything every party must agree on, normalised (tuples as lists): the job's keys
        and the consortium's (protocol, correlation provider, dealer, the parties in session
        order, TLS on or off; the names and values :func:`covault.runtime.config_session_id`
        uses), not its timeout or addresses (where a party listens is its operator's)."""
        return {
            "task": self.task,
            "label": self.label,
            "partition": self.partition,
            "id": self.id_column,
            "protocol": self.protocol,
            "provider": self.provider,
            "dealer": self.dealer,
            "parties": list(self.config.names),
            "tls": not self.config.plaintext,
            "compute": list(self.compute),
            "data": list(self.data_parties),
            "reveal_model_to": list(self.reveal_model_to),
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "frac_bits": self.config.frac_bits,
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(self.model.items())},
            "features": None if self.features is None else list(self.features),
            "transform": {c: _transform_json(t) for c, t in sorted(self.transforms.items())},
            "regions": {p: r for p, r in sorted(self.regions.items()) if r is not None},
            "threshold": self.threshold,
        } | self._optional_keys()

    def _optional_keys(self) -> dict[str, Any]:
        """Keys agreed only where set: jobs without them keep their fingerprints."""
        out: dict[str, Any] = {} if self.model_store is None else {"model_store": self.model_store}
        out |= {} if self.answer == "scores" else {"answer": self.answer}
        return out | ({} if self.privacy is None else {"privacy": dict(sorted(self.privacy.items()))})

    def fingerprint(self) -> str:
        """Hex digest of everything every party must agree on (checked before any computation)."""
        blob = json.dumps(self._agreed(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(b"covault job v1\0" + blob).hexdigest()

    def fingerprint_parts(self) -> dict[str, str]:
        """Hex digest per key of :meth:`fingerprint`'s content, ``model.NAME`` per hyper-parameter
        (``data``: the data parties in order): the session id covers these, so that parties
        started from different job files name the keys that differ."""
        from covault.runtime import agreement_digests

        agreed = self._agreed()
        agreed.update({f"model.{k}": v for k, v in agreed.pop("model").items()})
        return agreement_digests(agreed)


def roles(job, party: str, dealer: str | None = None) -> list[str]:
    """The job roles of ``party``: compute, dealer, data, receiver. ``dealer``: the session's
    name for the 2pc dealer, where it differs from the job's (``covault.run`` names it
    ``"dealer"``)."""
    out = []
    if party in job.compute:
        out.append("compute")
    if job.dealer is not None and party in (job.dealer, dealer):
        out.append("dealer")
    if party in job.data_parties:
        out.append("data")
    if party in job.reveal_model_to:
        out.append("receiver")
    return out


def _transform_json(t: Any) -> Any:
    """A column transform as plain JSON (fingerprints)."""
    d = asdict(t) if is_dataclass(t) else dict(t)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(d.items())}


def load_job(path: str | Path) -> Job:
    """Read and validate the job file at ``path`` (module docstring)."""
    return parse_job(read_toml(path, "job file", JobError), Path(path))


def parse_job(raw: dict[str, Any], path: Path | None = None) -> Job:
    """Validate a parsed job document; relative paths are taken from ``path``'s folder."""
    raw = dict(raw)
    parties_raw = raw.get("parties")
    if "dealer" not in raw and isinstance(parties_raw, dict) and _needs_dealer(raw):
        if DEFAULT_DEALER in parties_raw and PARTY_DATA_KEYS & set(parties_raw[DEFAULT_DEALER] or {}):
            raise JobError(f"party {DEFAULT_DEALER!r} owns data; name the 2pc dealer with dealer = 'NAME'")
        raw["dealer"] = DEFAULT_DEALER
        raw["parties"] = {**parties_raw, DEFAULT_DEALER: parties_raw.get(DEFAULT_DEALER, {})}
    try:
        config = parse_config(raw, path, extra_keys=JOB_KEYS, extra_party_keys=PARTY_DATA_KEYS)
    except JobError:
        raise
    except ConfigError as exc:
        raise JobError(str(exc)) from None
    base = path.absolute().parent if path is not None else Path.cwd()

    task = raw.get("task")
    if task not in TASKS:
        raise JobError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    label = raw.get("label")
    if not isinstance(label, str) or not label:
        raise JobError(f"label must name the label column, got {label!r}")
    partition = raw.get("partition", "horizontal")
    if partition not in PARTITIONS:
        raise JobError(f"partition must be 'horizontal' or 'vertical', got {partition!r}")
    id_column = raw.get("id")
    if partition == "vertical":
        if not isinstance(id_column, str) or not id_column:
            raise JobError(
                "partition = 'vertical' needs id = 'COLUMN': the column that identifies a row in every "
                f"party's data (rows are matched on it by private set intersection), got {id_column!r}"
            )
        if id_column == label:
            raise JobError(f"id and label name the same column {label!r}")
    elif id_column is not None:
        raise JobError("id is only used with partition = 'vertical' (drop it, or set the partition)")

    data, test = _data_files(config, base)
    owners = _owners(raw.get("owners"), config, data)
    if partition == "vertical":
        if len(owners) < 2:
            raise JobError(
                f"partition = 'vertical' needs at least two data parties (got {list(owners)}); "
                "a single owner of every column is a horizontal job"
            )
        if test and len(test) != len(data):
            missing = [p for p in data if p not in test]
            raise JobError(
                f"partition = 'vertical': either every data party gives a test file or none does "
                f"(missing at {missing}); held-out rows are matched across parties like training rows"
            )
    model_store, model_dir = _model_store(raw, base)
    reveal = _reveal_to(raw.get("reveal_model_to"), config, owners, model_store)
    if not reveal and raw.get("model_out") is not None:
        raise JobError(
            "model_out: reveal_model_to = [] reveals the model to nobody, so no party can write it"
        )
    test_fraction = raw.get("test_fraction", 0.2)
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float)
        or not 0 <= test_fraction < 1
    ):
        raise JobError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise JobError(f"seed must be a non-negative integer, got {seed!r}")
    model_out = raw.get("model_out")
    if model_out is not None:
        if not isinstance(model_out, str) or not model_out:
            raise JobError(f"model_out must be a file path, got {model_out!r}")
        model_out = Path(model_out)
        if not model_out.is_absolute():
            model_out = base / model_out
    model = _model_params(task, raw.get("model", {}), seed)
    features = _features(raw.get("features"), label, id_column)
    transforms = _transforms(raw.get("transform", {}), label)
    policy = {
        name: _resolve(base, _path_value(name, "policy", party.options["policy"]))
        for name, party in config.parties.items()
        if "policy" in party.options
    }
    for name in policy:
        if name not in owners:
            raise JobError(
                f"party {name!r} has a policy but owns no data (policies govern a data owner's rows)"
            )
    threshold = raw.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise JobError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    if threshold != 0.5 and (TASKS[task]["kind"] != "classification" or int(model.get("n_classes", 2)) != 2):
        raise JobError("threshold applies to binary classification only (the probability of class 1)")
    answer = _answer(raw.get("answer", "scores"), task, model_store)
    privacy = _privacy(raw.get("privacy"), task, model, partition)
    mlflow_table(raw.get("mlflow", {}))  # where each party logs (docs/mlops.md); not agreed
    return Job(
        path, config, task, label, partition, id_column, data, test, reveal, float(test_fraction), seed,
        model_out, model, features, transforms, policy, owners, float(threshold), model_store, model_dir,
        answer, privacy,
    )  # fmt: skip


def _needs_dealer(raw: dict[str, Any]) -> bool:
    """Whether the job's protocol and provider need a dealer party (False where they are
    invalid: the config check names the problem)."""
    try:
        return needs_dealer(raw.get("protocol", schemes.DEFAULT), raw.get("provider"))
    except ProtocolError:
        return False


def _data_files(config: ConsortiumConfig, base: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    data: dict[str, Any] = {}
    test: dict[str, Any] = {}
    for name, party in config.parties.items():
        opts = party.options
        if "test" in opts and "data" not in opts:
            raise JobError(f"party {name!r} has a test file but no data file (add data = 'FILE')")
        if "data" not in opts:
            continue
        if name == config.dealer:
            raise JobError(f"party {name!r} is the 2pc dealer and cannot own data (the dealer must see none)")
        data[name] = source_value(name, "data", opts["data"], base)
        if "test" in opts:
            test[name] = source_value(name, "test", opts["test"], base)
    return data, test


def _owners(value: Any, config: ConsortiumConfig, data: dict[str, Any]) -> tuple[str, ...]:
    """The data owners: ``owners = [...]`` (their sources may live in local files), else the
    parties with ``data``."""
    if value is None:
        owners = tuple(data)
    else:
        if not isinstance(value, list) or not value or any(not isinstance(v, str) for v in value):
            raise JobError(f"owners must be a non-empty list of party names, got {value!r}")
        for v in value:
            if v not in config.parties:
                raise JobError(f"owners: {v!r} is not one of the parties {sorted(config.parties)}")
            if v == config.dealer:
                raise JobError(
                    f"party {v!r} is the 2pc dealer and cannot own data (the dealer must see none)"
                )
        if len(set(value)) != len(value):
            raise JobError(f"owners lists a party twice: {value!r}")
        stray = [p for p in data if p not in value]
        if stray:
            raise JobError(f"party {stray[0]!r} has data but is not in owners {value!r}")
        owners = tuple(value)
    if not owners:
        raise JobError(
            "no party owns data: give at least one party data = 'FILE' in [parties.NAME] "
            "(or list the data parties in owners = [...] and give each its --local file)"
        )
    for name in config.parties:
        if name not in owners and name not in config.compute and name != config.dealer:
            raise JobError(
                f"party {name!r} is neither a compute party, the dealer nor a data owner "
                f"(give it data = 'FILE' or remove it)"
            )
    return owners


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _path_value(party: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise JobError(f"party {party!r}: {key} must be a file path, got {value!r}")
    return value


def source_value(party: str, key: str, value: Any, base: Path) -> Path | dict[str, str]:
    """A data source as given under ``key`` (``data`` / ``test``): a file path (resolved against
    ``base``) or a SQL table ``{url, table | query, password_env}`` (a relative SQLite path resolved
    against ``base``)."""
    if isinstance(value, str):
        return _resolve(base, _path_value(party, key, value))
    if not isinstance(value, dict):
        raise JobError(
            f"party {party!r}: {key} must be a file path or a table such as "
            f"{{ url = 'sqlite:///bank.db', table = 'tx' }}, got {value!r}"
        )
    bad = sorted(set(value) - SOURCE_KEYS)
    if bad:
        raise JobError(
            f"party {party!r}: unknown key {bad[0]!r} in {key} (allowed: {', '.join(sorted(SOURCE_KEYS))})"
        )
    for k, v in value.items():
        if not isinstance(v, str) or not v:
            raise JobError(f"party {party!r}: {key}.{k} must be a non-empty string, got {v!r}")
    if "url" not in value:
        raise JobError(f"party {party!r}: {key} needs url = '...' (a SQLAlchemy database URL)")
    if ("table" in value) == ("query" in value):
        raise JobError(f"party {party!r}: {key} needs exactly one of table = '...' or query = 'SELECT ...'")
    out = dict(value)
    prefix = "sqlite:///"
    if out["url"].startswith(prefix) and out["url"] != prefix and not out["url"].startswith(prefix + "/"):
        rel = out["url"][len(prefix) :]
        if rel != ":memory:" and not rel.startswith("file:"):
            out["url"] = prefix + str(_resolve(base, rel))
    return out


def _features(value: Any, label: str, id_column: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or any(not isinstance(v, str) or not v for v in value):
        raise JobError(f"features must be a non-empty list of column names, got {value!r}")
    if len(set(value)) != len(value):
        twice = next(v for v in value if value.count(v) > 1)
        raise JobError(f"features lists column {twice!r} twice")
    for special, what in ((label, "label"), (id_column, "id")):
        if special is not None and special in value:
            raise JobError(f"features: {special!r} is the {what} column; it cannot also be a feature")
    return tuple(value)


def _transforms(value: Any, label: str) -> dict[str, Any]:
    if isinstance(value, dict) and not value:
        return {}
    from covault.ingest.transforms import parse_transforms

    if isinstance(value, dict) and label in value:
        raise JobError(f"[transform]: {label!r} is the label column; labels are not transformed")
    try:
        return parse_transforms(value)
    except JobError:
        raise
    except ConfigError as exc:
        raise JobError(str(exc)) from None


LOCAL_KEYS = {"data", "test", "policy", "governance"}


def bind_local(job: Job, party: str, path: str | Path) -> Job:
    """``job`` with ``party``'s data source, test source and policy taken from its local file
    (TOML with ``data``, ``test``, ``policy``; paths relative to that file; its ``governance``
    folder is read by :func:`covault.jobs.approvals.party_folder`). The local file is read only
    at that party and never sent; it replaces what the job file says for ``party``."""
    if party not in job.data_parties:
        raise JobError(
            f"party {party!r} owns no data in this job (owners: {list(job.data_parties)}); "
            "a --local file gives a data owner's sources and policy"
        )
    local = Path(path)
    raw = read_toml(local, "local file", JobError)
    bad = sorted(set(raw) - LOCAL_KEYS)
    if bad:
        raise JobError(
            f"local file {local}: unknown key {bad[0]!r} (allowed: {', '.join(sorted(LOCAL_KEYS))})"
        )
    if "data" not in raw:
        raise JobError(f"local file {local}: data = 'FILE' (or a SQL table) is missing")
    base = local.absolute().parent
    return bind_sources(
        job,
        party,
        data=source_value(party, "data", raw["data"], base),
        test=source_value(party, "test", raw["test"], base) if "test" in raw else None,
        policy=_resolve(base, _path_value(party, "policy", raw["policy"])) if "policy" in raw else None,
    )


def bind_sources(
    job: Job, party: str, *, data: Any, test: Any = None, policy: str | Path | None = None
) -> Job:
    """``job`` with data owner ``party``'s sources given from Python: a path, a SQL table dict,
    or a pandas / Arrow table (:mod:`covault.ingest.connectors`); ``policy`` a policy file. Like
    a local file, they replace what the job file says for ``party`` and are not part of the
    fingerprint."""
    if party not in job.data_parties:
        raise JobError(f"party {party!r} owns no data in this job (owners: {list(job.data_parties)})")
    sources, tests, policies = dict(job.data), dict(job.test), dict(job.policy)
    sources[party] = data
    tests.pop(party, None)
    if test is not None:
        tests[party] = test
    policies.pop(party, None)
    if policy is not None:
        policies[party] = Path(policy)
    return replace(job, data=sources, test=tests, policy=policies)


def _model_store(raw: dict[str, Any], base: Path) -> tuple[str | None, Path | None]:
    """``model_store`` (a model name) and ``model_dir`` (resolved against ``base``)."""
    name, folder = raw.get("model_store"), raw.get("model_dir")
    if name is None:
        if folder is not None:
            raise JobError("model_dir is where model_store = 'NAME' keeps the shares; give model_store too")
        return None, None
    from covault.serving.store import ModelStoreError, check_name

    try:
        check_name(name, "model_store")
    except ModelStoreError as exc:
        raise JobError(str(exc)) from None
    if folder is not None and (not isinstance(folder, str) or not folder):
        raise JobError(f"model_dir must be a folder path, got {folder!r}")
    return name, _resolve(base, folder or "models")


def _answer(value: Any, task: str, model_store: str | None) -> str:
    """The job key ``answer``: what clients of the stored model receive (``docs/serving.md``,
    "Answer policy"); a decision's threshold is the job's ``threshold``."""
    from covault.serving.policy import ANSWERS

    if value not in ANSWERS:
        raise JobError(f"answer must be one of {', '.join(map(repr, ANSWERS))}, got {value!r}")
    if value == "decision":
        if model_store is None:
            raise JobError(
                "answer = 'decision' is the policy of a stored model's service: give model_store = 'NAME'"
            )
        if TASKS[task]["kind"] != "classification":
            raise JobError(f"answer = 'decision' needs a classifier; task {task!r} predicts values")
    return value


def _reveal_to(
    value: Any, config: ConsortiumConfig, owners: tuple[str, ...], model_store: str | None = None
) -> tuple[str, ...]:
    if value is None:
        return tuple(owners)
    if isinstance(value, str):
        value = [value]
    if value == [] and model_store is None:
        raise JobError(
            "reveal_model_to = [] keeps the model secret: name the store with model_store = 'NAME' "
            "(each compute party keeps its shares, encrypted at rest; docs/serving.md)"
        )
    if value == []:
        return ()
    if not isinstance(value, list) or not value or any(not isinstance(v, str) for v in value):
        raise JobError(f"reveal_model_to must be a non-empty list of party names, got {value!r}")
    for v in value:
        if v not in config.parties:
            raise JobError(f"reveal_model_to: {v!r} is not one of the parties {sorted(config.parties)}")
        if v == config.dealer:
            raise JobError(f"reveal_model_to: {v!r} is the 2pc dealer, which must learn nothing")
    if len(set(value)) != len(value):
        raise JobError(f"reveal_model_to lists a party twice: {value!r}")
    return tuple(value)


def _privacy(raw: Any, task: str, model: dict[str, Any], partition: str) -> dict[str, Any] | None:
    """The ``[privacy]`` table (DP-SGD; :class:`covault.privacy.dpsgd.DPSGD`) checked, or None:
    JobError naming the key."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise JobError("[privacy] must be a table (epsilon or noise_multiplier, delta, max_grad_norm)")
    bad = sorted(set(raw) - PRIVACY_KEYS)
    if bad:
        raise JobError(f"unknown key {bad[0]!r} in [privacy] (allowed: {', '.join(sorted(PRIVACY_KEYS))})")
    if task not in DP_TASKS:
        raise JobError(f"[privacy]: DP-SGD trains {' and '.join(DP_TASKS)}, not task {task!r}")
    if partition != "horizontal":
        raise JobError("[privacy]: DP-SGD jobs are horizontal (partition = 'vertical' is not supported yet)")
    if model.get("standardize", True):
        raise JobError(
            "[privacy] needs [model] standardize = false: the means and variances of every row would "
            "enter the model without noise; bound the features with [transform] clip and scale instead"
        )
    if model.get("class_weight") is not None:
        raise JobError("[privacy]: [model] class_weight is not supported (its class counts are not private)")
    if model.get("optimizer", "sgd") != "sgd":
        raise JobError("[privacy]: DP-SGD trains the MLP with [model] optimizer = 'sgd' (momentum), not adam")
    bound = raw.get("feature_bound", 1.0)
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound <= 64:
        raise JobError(f"[privacy] feature_bound must be a number in (0, 64], got {bound!r}")
    from covault.privacy.dpsgd import DPSGD

    params = {k: v for k, v in raw.items() if k != "feature_bound"}
    try:
        DPSGD(**params)
    except (ValueError, TypeError) as exc:
        raise JobError(str(exc)) from None
    return {**params, "feature_bound": float(bound)}


def _model_params(task: str, raw: Any, seed: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise JobError("[model] must be a table of hyper-parameters")
    spec = TASKS[task]
    bad = sorted(set(raw) - spec["keys"])
    if bad:
        raise JobError(
            f"unknown key {bad[0]!r} in [model] for task {task!r} (allowed: {', '.join(sorted(spec['keys']))})"
        )
    params = {**spec["defaults"], **raw}
    if params.get("penalty") == "none":
        params["penalty"] = None
    for key in ("hidden", "betas"):
        if key in params:
            if not isinstance(params[key], list | tuple) or any(
                isinstance(v, bool) or not isinstance(v, int | float) for v in params[key]
            ):
                raise JobError(f"[model] {key} must be a list of numbers, got {params[key]!r}")
            params[key] = tuple(params[key])
    probe = Job(None, None, task, "", "horizontal", None, {}, {}, (), 0.0, seed, None, params)  # type: ignore[arg-type]
    try:
        probe.estimator()
    except (ValueError, TypeError) as exc:
        raise JobError(f"[model]: {exc}") from None
    return params
