"""A party's at-rest key: 32 bytes from ``os.urandom`` in ``FOLDER/PARTY.store.key``.

The file is created once with ``O_CREAT | O_EXCL`` and mode 0600 (never through a symbolic
link) and read afterwards; a key file that others may read, or that is not 32 bytes, is
refused. Nothing else holds the key: another party, or a thief of the model files, cannot
decrypt this party's shares without it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from covault.serving.store import ModelStoreError

KEY_BYTES = 32


def key_path(folder: str | Path, party: str) -> Path:
    """Where ``party`` keeps its at-rest key in ``folder``."""
    return Path(folder) / f"{party}.store.key"


def party_key(folder: str | Path, party: str, *, create: bool = True) -> bytes:
    """``party``'s at-rest key in ``folder``: read it, or (``create``) make it if absent.
    ModelStoreError naming the file and party if it cannot be read or is unsafe."""
    path = key_path(folder, party)
    if create and not path.exists():
        try:
            Path(folder).mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass  # made meanwhile by another process of this party: read it below
        except OSError as exc:
            raise ModelStoreError(
                f"party {party!r}: cannot create its at-rest key {path}: {exc.strerror}"
            ) from None
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(KEY_BYTES))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ModelStoreError(
            f"party {party!r}: no at-rest key {path} (its model files cannot be read)"
        ) from None
    except OSError as exc:
        raise ModelStoreError(
            f"party {party!r}: cannot read its at-rest key {path}: {exc.strerror}"
        ) from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        key = fh.read(KEY_BYTES + 1)
    if not stat.S_ISREG(mode) or mode & 0o077:
        raise ModelStoreError(
            f"party {party!r}: at-rest key {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            "it must be a file of mode 0600"
        )
    if len(key) != KEY_BYTES:
        raise ModelStoreError(f"party {party!r}: at-rest key {path} is not {KEY_BYTES} bytes")
    return key


def store_folders(config, model_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``(model folder, key folder)`` of a party of ``config`` (a consortium config or a job's):
    the model folder is ``model_dir``, else ``models`` next to the config file; the key folder
    the config's ``[tls] certs`` (the folder of the party's TLS key), else ``MODEL_FOLDER/keys``."""
    if model_dir is None:
        base = config.path.absolute().parent if config.path is not None else Path.cwd()
        model_dir = base / "models"
    folder = Path(model_dir)
    keys = Path(config.certs) if config.certs is not None else folder / "keys"
    return folder, keys
