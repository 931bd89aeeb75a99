"""The backup repository's passphrase: from SCTK_BACKUP_PASSPHRASE, else backup.passphrase_file.

The passphrase never comes from the data directory's keyring: a snapshot holds that keyring,
and a key that only opens with itself would be lost with the data it protects.
"""

from __future__ import annotations

import os
from pathlib import Path

from sctk.config import Settings
from sctk.errors import ConfigError

ENV = "SCTK_BACKUP_PASSPHRASE"


def resolve(settings: Settings) -> str:
    """The passphrase, or one sentence saying where to put it."""
    value = os.environ.get(ENV)
    if value:
        return value
    path = settings.backup.passphrase_file
    if path is None:
        raise ConfigError(
            f"No backup passphrase: set {ENV} or name a file holding it in backup.passphrase_file."
        )
    path = path.expanduser()
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline().rstrip("\r\n")
    except FileNotFoundError:
        raise ConfigError(
            f"The backup passphrase file {path} does not exist; create it or fix "
            "backup.passphrase_file."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"Cannot read the backup passphrase file {path}: {reason}.") from None
    if not first:
        raise ConfigError(
            f"The backup passphrase file {path} has an empty first line; write the "
            "passphrase there."
        )
    return first


def configuration_problem(settings: Settings) -> str | None:
    """None when backups can run (a passphrase is at hand), else one sentence saying that
    backups are not configured and how to configure them."""
    try:
        resolve(settings)
    except ConfigError as exc:
        return f"Backups are not configured. {exc.message}"
    return None


def read_new(source: str) -> str:
    """A new passphrase from SOURCE: '-' for the first line of stdin, else a file path
    (never from the command line, where other users can see it)."""
    import sys

    if source == "-":
        line = sys.stdin.readline()
        where = "standard input"
    else:
        path = Path(source).expanduser()
        try:
            with path.open(encoding="utf-8") as fh:
                line = fh.readline()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"Cannot read the new passphrase file {path}: {reason}.") from None
        where = str(path)
    value = line.rstrip("\r\n")
    if not value:
        raise ConfigError(f"No new passphrase on the first line of {where}; write it there.")
    return value
