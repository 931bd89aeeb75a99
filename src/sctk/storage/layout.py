"""The data directory: its layout, its permissions and its configuration template
(`sctk.ops.init_home` makes one)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import BaseModel, TypeAdapter

from sctk.config import CONFIG_FILE_NAME, Settings, settings_fields
from sctk.errors import SctkError

# keys/ holds the encryption keyring: only the service account may enter it.
SUBDIRS: dict[str, int] = {
    "keys": 0o700,
    "data": 0o750,
    "results": 0o750,
    "archive": 0o750,
    "backups": 0o700,
    "logs": 0o750,
    "tmp": 0o750,
    "reports": 0o750,
}


@dataclass
class InitReport:
    home: Path
    created: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    revision_before: str | None = None
    revision_after: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.fixed) or self.revision_before != self.revision_after


def is_data_dir(path: Path) -> bool:
    return (path / CONFIG_FILE_NAME).is_file()


def _toml_item(value: Any) -> Any:
    """VALUE as a tomlkit item on one line: tables inline, None (unset) left out."""
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update({k: _toml_item(v) for k, v in value.items() if v is not None})
        return table
    if isinstance(value, list | tuple):
        array = tomlkit.array()
        array.extend(_toml_item(v) for v in value)
        return array
    return value


def _toml_value(value: Any) -> str:
    plain = TypeAdapter(type(value)).dump_python(value, mode="json")
    return tomlkit.item(_toml_item(plain)).as_string()


def config_template(database_url: str | None = None) -> str:
    """A commented sctk.toml listing every setting with its default, built from Settings."""
    lines = [
        "# sctk configuration. Precedence: defaults < this file < SCTK_* environment < flags.",
        "# Uncomment a line to change it; `sctk config check` validates this file and",
        "# `sctk config show` prints the effective values and where each came from.",
        "",
    ]
    fields = settings_fields()
    info = fields["database_url"]
    lines.append(f"# {info.description}")
    if database_url:
        lines.append(f"database_url = {_toml_value(database_url)}")
    else:
        lines.append('# database_url = ""')
    for name, info in fields.items():
        annotation = info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        lines += ["", f"[{name}]"]
        for key, sub in annotation.model_fields.items():
            lines.append(f"# {sub.description}")
            default = sub.get_default(call_default_factory=True)
            shown = "(unset by default)" if default is None else _toml_value(default)
            lines.append(f"# {key} = {shown}")
    return "\n".join(lines) + "\n"


def _ensure_dir(path: Path, mode: int, report: InitReport, label: str) -> None:
    if not path.exists():
        path.mkdir(parents=True, mode=mode)
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask
        report.created.append(label)
    elif not path.is_dir():
        raise SctkError(f"{path} exists and is not a directory; move it away and run init again.")
    elif stat.S_IMODE(path.stat().st_mode) & ~mode:
        os.chmod(path, mode)
        report.fixed.append(f"{label} permissions set to {oct(mode)[2:]}")


def check_target(home: Path, force: bool) -> None:
    """Refuse to scatter sctk's layout into an unrelated non-empty directory."""
    if home.exists() and not home.is_dir():
        raise SctkError(f"{home} is a file, not a directory; choose another data directory.")
    if home.is_dir() and not is_data_dir(home) and any(home.iterdir()) and not force:
        raise SctkError(
            f"{home} is not empty and is not an sctk data directory; "
            "choose an empty or new directory, or pass --force to use it anyway."
        )


def create_dirs(home: Path, report: InitReport) -> None:
    """Create HOME and its subdirectories, or fix their permissions."""
    _ensure_dir(home, 0o750, report, str(home))
    for name, mode in SUBDIRS.items():
        _ensure_dir(home / name, mode, report, f"{name}/")


def require_data_dir(settings: Settings) -> None:
    """Commands that need an initialised directory say so plainly when it is missing."""
    if not is_data_dir(settings.home):
        raise SctkError(
            f"{settings.home} is not an sctk data directory; run 'sctk init {settings.home}' "
            "first or point --home / SCTK_HOME at one."
        )
