"""The configuration half of an upgrade: settings renamed since the file was written are
moved to their new names in sctk.toml (comments and the rest kept), atomically."""

from __future__ import annotations

import tomlkit

from sctk.config import (
    CONFIG_FILE_MODE,
    CONFIG_FILE_NAME,
    RENAMED_SETTINGS,
    Settings,
    apply_renames,
    read_toml,
)
from sctk.fsutil import atomic_write


def migrate_config(settings: Settings, renames: dict[str, str] | None = None) -> list[str]:
    """Rewrite sctk.toml with renamed settings under their new names; what was renamed."""
    renames = RENAMED_SETTINGS if renames is None else renames
    path = settings.home / CONFIG_FILE_NAME
    _, done = apply_renames(read_toml(path), renames)
    if not done:
        return []
    doc = tomlkit.parse(path.read_text("utf-8"))
    for old, new in done:
        *old_path, old_key = old.split(".")
        *new_path, new_key = new.split(".")
        source = doc
        for part in old_path:
            source = source[part]
        value = source.pop(old_key)
        target = doc
        for part in new_path:
            if part not in target:
                target[part] = tomlkit.table()
            target = target[part]
        if new_key not in target:
            target[new_key] = value
    Settings.model_validate({**doc.unwrap(), "home": settings.home})  # still valid as a whole
    atomic_write(path, tomlkit.dumps(doc), mode=CONFIG_FILE_MODE)
    return [f"{old} -> {new}" for old, new in done]
