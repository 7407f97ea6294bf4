"""Secret models at rest and their use in a session (``docs/serving.md``).

:func:`save_model` writes this party's shares of a :class:`SecretModel`, encrypted under its
own at-rest key (:mod:`covault.serving.keys`, :mod:`covault.serving.store`);
:func:`load_model` reads them back into a session of the same protocol and compute parties.
:class:`Client` queries a service of the compute parties (:mod:`covault.serving.service`).
"""

from covault.serving.client import Client
from covault.serving.model import SecretModel, load_model, save_model
from covault.serving.store import ModelStoreError, model_file

__all__ = ["Client", "ModelStoreError", "SecretModel", "load_model", "model_file", "save_model"]
