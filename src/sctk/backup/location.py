"""Where the backup repository lives, and opening it with the configured passphrase."""

from __future__ import annotations

from pathlib import Path

from sctk.config import Settings


def repo_url(settings: Settings) -> str:
    """backup.repository, else <home>/backups."""
    configured = settings.backup.repository
    if configured:
        return configured
    return str(settings.home / "backups")


def local_path(url: str) -> Path | None:
    """The directory a local repository URL names (None for a remote one)."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    return Path(url).expanduser()


def display(url: str) -> str:
    """URL without a password (sftp://user:secret@host/x -> sftp://user:***@host/x)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}://{userinfo}@{hostpart}"


def open_repo(settings: Settings, url: str | None = None):
    """The repository at URL (default: the configured one), opened with the passphrase."""
    from sctk.backup import passphrase
    from sctk.backup.repo import Repository

    return Repository.open(url or repo_url(settings), passphrase.resolve(settings))


def init_repo(settings: Settings, url: str | None = None):
    """Create a repository at URL (default: the configured one)."""
    from sctk.backup import passphrase
    from sctk.backup.repo import Repository

    return Repository.init(url or repo_url(settings), passphrase.resolve(settings))


def repo_exists(url: str) -> bool:
    """Whether URL holds an initialised repository (its config file; no key needed)."""
    from sctk.backup.repo.backend import open_backend

    backend = open_backend(url)
    return backend.probe() == "present" and backend.size("config") is not None


def ensure_repo(settings: Settings, actor: str = "system") -> str | None:
    """Create the configured repository when it is missing and a passphrase is configured,
    so that backups run from the first day without a manual `sctk backup init`. The
    repository's address when one was created (and audited), else None."""
    from sctk.backup import runs
    from sctk.backup.passphrase import configuration_problem

    url = repo_url(settings)
    if configuration_problem(settings) is not None or repo_exists(url):
        return None
    created = init_repo(settings, url)
    runs.audit_only(settings, "backup.init", actor, display(created.url), {"repository": url})
    return display(created.url)
