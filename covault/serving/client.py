"""The client of a private inference service (``covault serve``): its rows in, its answers out.

``with Client(CONFIG, as_="bank_b", model="fraud") as c: c.predict(rows)`` joins the service
session of the compute parties (``docs/serving.md``, "Service"); every query's rows are checked
here first (width, NaN or inf, fixed-point range) and refused before anything is sent, so the
service goes on with the next query.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from covault.errors import CovaultError
from covault.serving.service import announce, check_rows, service_config, session_job


class Client:
    """One client party of ``config`` (a path or a loaded consortium config) querying ``model``;
    ``transcript_dir``: record every message it sends (:mod:`covault.transport.transcript`)."""

    def __init__(self, config: Any, *, as_: str, model: str, transcript_dir: Any = None) -> None:
        from covault.deploy.config import load_config

        self.config = load_config(config) if isinstance(config, str | Path) else config
        self.party, self.model_name, self.transcript_dir = as_, model, transcript_dir
        self.model: Any = None
        self._stack: contextlib.ExitStack | None = None
        self._session: Any = None
        self._query: Any = None
        self._failed: BaseException | None = None

    def __enter__(self) -> Client:
        from covault.runtime import config_session
        from covault.serving.keys import store_folders
        from covault.serving.model import load_model
        from covault.serving.online import Query

        restricted = service_config(self.config, self.party)
        stack = contextlib.ExitStack()
        try:
            job = session_job(self.model_name)
            opened = config_session(restricted, self.party, job=job, transcript_dir=self.transcript_dir)
            session = stack.enter_context(opened)
            folder, keys = store_folders(self.config)
            self.model = load_model(session, folder, self.model_name, key_dir=keys)  # the public header
            self._query = stack.enter_context(
                Query(session, self.party, self.model.n_features, self.model.forward)
            )
        except BaseException as exc:
            stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack, self._session = stack, session
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        if kind is None and self._failed is None:
            try:
                announce(self._session, 0)  # done: the service ends its session
            except BaseException as e:
                stack.__exit__(type(e), e, e.__traceback__)
                raise
            stack.__exit__(None, None, None)
        else:
            failed = exc if exc is not None else self._failed
            stack.__exit__(type(failed), failed, failed.__traceback__)

    close = __exit__

    def predict(self, rows: Any) -> np.ndarray:
        """The model's answer for ``rows`` (``(n, features)``, or one row): probabilities or
        predictions, as :meth:`~covault.serving.model.SecretModel.forward`. Malformed rows raise
        ShapeError or EncodingError before anything is sent; a failed service raises PeerError
        naming the party."""
        if self._session is None or self._stack is None:
            raise CovaultError(f"client {self.party!r}: use the Client in a with-block (not open)")
        if self._failed is not None:
            raise CovaultError(
                f"client {self.party!r}: the service session of model {self.model_name!r} failed "
                f"earlier ({self._failed})"
            )
        x = check_rows(self._session, self.model, rows, self.party)
        try:
            announce(self._session, x.shape[0])
            return np.asarray(self._query(x))
        except BaseException as exc:
            self._failed = exc
            raise
