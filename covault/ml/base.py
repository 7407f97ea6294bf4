"""The estimator contract (scikit-learn's), shared by the secure estimators and their plaintext twins.

* Every hyper-parameter is an explicit keyword argument of ``__init__`` (no ``*args``, no
  ``**kw``: a subclass that breaks this fails when the class is defined), stored unchanged under
  its own name (``self._store_params(locals())``). ``__init__`` computes nothing else; it
  calls :meth:`Estimator._validate_params`, which checks the values without changing them, so
  invalid values fail early, at construction as in :meth:`Estimator.set_params`.
* :meth:`Estimator.get_params` and :meth:`Estimator.set_params` read the parameter names from
  the ``__init__`` signature (read once per class); ``repr`` shows the parameters that differ
  from their defaults; :func:`clone` makes an unfitted copy with the same parameters.
* What ``fit`` learns lives in attributes whose names end with ``_``; none exists before
  ``fit``. Using a model before ``fit`` raises :class:`NotFittedError` naming the estimator.
* ``fit`` returns the estimator.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar, Self

from covault.errors import CovaultError, ProtocolError


class NotFittedError(ProtocolError):
    """An estimator was asked to predict, score or reveal before ``fit``; names the estimator."""


class ParameterError(CovaultError, ValueError):
    """A hyper-parameter name the estimator does not have, or an estimator class whose
    ``__init__`` hides its hyper-parameters (``*args`` / ``**kw``)."""


def _init_parameters(cls: type) -> tuple[inspect.Parameter, ...]:
    """The hyper-parameters of ``cls``: the arguments of its ``__init__`` but ``self``."""
    if cls.__init__ is object.__init__:
        return ()
    params = tuple(inspect.signature(cls.__init__).parameters.values())[1:]
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ParameterError(
                f"{cls.__name__}.__init__ takes {p}: an estimator declares every hyper-parameter "
                f"as a keyword argument of __init__"
            )
    return params


def _is_default(value: Any, default: Any) -> bool:
    """Whether ``value`` is the parameter's default (the same type and an equal value)."""
    if value is default:
        return True
    if type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays and other values without a single truth value
        return False


class Estimator:
    """Base class of the estimators: parameters from the ``__init__`` signature (module docstring)."""

    _parameters: ClassVar[tuple[inspect.Parameter, ...]] = ()
    _estimator_type: ClassVar[str | None] = None  # "classifier" or "regressor"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._parameters = _init_parameters(cls)  # the signature, read once per class

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The hyper-parameter names, in the order of ``__init__``."""
        return tuple(p.name for p in cls._parameters)

    def _store_params(self, values: dict[str, Any]) -> None:
        """``__init__``'s one statement, ``self._store_params(locals())``: keep every parameter
        unchanged under its own name, then :meth:`_validate_params`."""
        for name in self.param_names():
            setattr(self, name, values[name])
        self._validate_params()

    def _validate_params(self) -> None:
        """Raise ValueError (or TypeError) naming the first invalid hyper-parameter; change nothing."""

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters by name; ``deep``: also ``name__sub`` for estimator-valued ones."""
        out: dict[str, Any] = {}
        for name in self.param_names():
            value = getattr(self, name)
            if deep and isinstance(value, Estimator):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Self:
        """Set hyper-parameters (``name__sub`` for one of an estimator-valued parameter); all are
        checked together and none changes if one is invalid. ParameterError for an unknown name."""
        names = self.param_names()
        own: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in names or (sep and not isinstance(getattr(self, name), Estimator)):
                raise ParameterError(
                    f"{type(self).__name__} has no parameter {key!r}; valid parameters: {', '.join(names)}"
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                own[name] = value
        before = {name: getattr(self, name) for name in own}
        for name, value in own.items():
            setattr(self, name, value)
        try:
            self._validate_params()
        except Exception:
            for name, value in before.items():
                setattr(self, name, value)
            raise
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def __repr__(self) -> str:
        shown = [
            f"{p.name}={getattr(self, p.name)!r}"
            for p in self._parameters
            if not _is_default(getattr(self, p.name), p.default)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


def is_classifier(estimator: object) -> bool:
    """Whether ``estimator`` (or estimator class) is a classifier (``_estimator_type``)."""
    return getattr(estimator, "_estimator_type", None) == "classifier"


def clone(estimator: Estimator) -> Estimator:
    """A new, unfitted estimator of the same class with the same hyper-parameters (copied;
    estimator-valued ones cloned)."""
    if not isinstance(estimator, Estimator):
        raise TypeError(f"clone() takes a covault estimator, got {type(estimator).__name__}")
    params = {
        k: clone(v) if isinstance(v, Estimator) else copy.deepcopy(v)
        for k, v in estimator.get_params(deep=False).items()
    }
    return type(estimator)(**params)


def check_fitted(estimator: Estimator, attribute: str, hint: str = "") -> None:
    """NotFittedError naming ``estimator`` unless it has the fitted ``attribute``."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"{type(estimator).__name__} is not fitted; call fit() first{hint}")
