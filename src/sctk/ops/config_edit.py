"""Changing one setting in <home>/sctk.toml: validated first, comments kept, audited, atomic."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

import tomlkit
from pydantic import BaseModel, SecretStr, ValidationError

from sctk import tomltext
from sctk.config import (
    CONFIG_FILE_MODE,
    CONFIG_FILE_NAME,
    Settings,
    describe_errors,
    read_toml,
    settings_fields,
)
from sctk.errors import ConfigError
from sctk.fsutil import atomic_write

REDACTED = "**********"


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    secret: bool


def _field(key: str) -> tuple[list[str], bool]:
    """The path of a known setting and whether it is a secret; ConfigError otherwise."""
    parts = key.split(".")
    fields = settings_fields()
    for depth, part in enumerate(parts):
        info = fields.get(part)
        if info is None or part == "home":
            known = ", ".join(k for k in fields if k != "home")
            raise ConfigError(f"Unknown setting '{key}'; known keys here: {known}.")
        annotation = info.annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if is_section and depth < len(parts) - 1:
            fields = annotation.model_fields
            continue
        if is_section or depth != len(parts) - 1:
            raise ConfigError(f"'{key}' is not a single setting; name one key, e.g. server.port.")
        return parts, "SecretStr" in str(annotation) or annotation is SecretStr
    raise ConfigError(f"Unknown setting '{key}'.")


def parse_value(raw: str) -> Any:
    """A TOML literal (9000, true, 1.5, "text") or, failing that, the text itself."""
    try:
        return tomltext.loads(f"v = {raw}", "The value", ConfigError)["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _effective(settings: Settings, parts: list[str], secret: bool, in_file: Any) -> Any:
    """The value in force before the change: the file's when it sets the key, else what the
    environment or the default gives (a key absent from the file is not None when its
    default is 30)."""
    if in_file is not None:
        value = in_file.unwrap() if hasattr(in_file, "unwrap") else in_file
    else:
        value = settings.model_dump(mode="json")
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
    if secret:
        return REDACTED if value else None
    return value


def set_value(settings: Settings, key: str, raw: str, actor: str) -> Change:
    """Set KEY to RAW in the data directory's sctk.toml, recording the change in the audit log.

    Nothing is written unless the whole file still validates and the audit entry is stored.
    """
    from sctk.security import audit_log
    from sctk.storage.engine import one_off_session

    path = settings.home / CONFIG_FILE_NAME
    parts, secret = _field(key)
    read_toml(path)  # a syntax error is reported with its line before anything else
    doc = tomlkit.parse(path.read_text("utf-8")) if path.exists() else tomlkit.document()
    table: Any = doc
    for part in parts[:-1]:
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
    old = table.get(parts[-1])
    value = parse_value(raw)
    table[parts[-1]] = value
    try:
        Settings.model_validate({**doc.unwrap(), "home": settings.home})
    except ValidationError as exc:
        problems = "; ".join(describe_errors(exc, {key: "the new value"}))
        raise ConfigError(f"Not changed: {problems}.") from None

    shown_old = _effective(settings, parts, secret, old)
    shown_new = REDACTED if secret else value
    with one_off_session(settings) as session:
        audit_log.record(
            session,
            "config.changed",
            actor=actor,
            target=key,
            details={"old": shown_old, "new": shown_new},
        )
        # written inside the transaction: if the file cannot be written, no entry stays
        atomic_write(path, tomlkit.dumps(doc), mode=CONFIG_FILE_MODE)
    return Change(key, shown_old, shown_new, secret)
