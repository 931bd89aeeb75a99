"""`sctk init`: make (or complete) a data directory: its folders, the keyring, sctk.toml and
the database at the newest schema.

It lives above storage and security because it uses both: the layout (storage) and the
keyring (security) know nothing of each other.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sctk.config import CONFIG_FILE_MODE, CONFIG_FILE_NAME, Settings, read_toml
from sctk.config import load as load_settings
from sctk.errors import SctkError
from sctk.fsutil import atomic_write
from sctk.security.keyring import Keyring, ring_path
from sctk.storage.engine import make_engine, ping
from sctk.storage.layout import InitReport, check_target, config_template, create_dirs, is_data_dir
from sctk.storage.migrate import upgrade


def init_home(
    home: Path, database_url: str | None = None, force: bool = False
) -> tuple[InitReport, Settings]:
    """Create (or complete) a data directory and bring its database to the newest schema."""
    check_target(home, force)
    if (
        database_url
        and is_data_dir(home)
        and read_toml(home / CONFIG_FILE_NAME).get("database_url") != database_url
    ):
        raise SctkError(
            f"{home / CONFIG_FILE_NAME} already exists and does not name this database_url; "
            "edit that file instead of passing --database-url."
        )
    overrides = {"database_url": database_url} if database_url else None
    settings = load_settings(home, overrides).settings
    engine = make_engine(settings)
    try:
        if not settings.is_sqlite:
            ping(engine)  # fail before creating anything when the server cannot be reached

        report = InitReport(home)
        create_dirs(home, report)
        if not ring_path(home).exists():
            Keyring.load(home)  # creates the ring with its first key
            report.created.append("keys/keyring.json")
        config_path = home / CONFIG_FILE_NAME
        if not config_path.exists():
            atomic_write(config_path, config_template(database_url), mode=CONFIG_FILE_MODE)
            report.created.append(CONFIG_FILE_NAME)
        report.revision_before, report.revision_after = upgrade(engine, "head")
        db_file = home / "sctk.db"
        if (
            settings.is_sqlite
            and db_file.exists()
            and stat.S_IMODE(db_file.stat().st_mode) != 0o600
        ):
            os.chmod(db_file, 0o600)  # it will hold password hashes and encrypted secrets
    finally:
        engine.dispose()
    return report, load_settings(home).settings
