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


def remote_options(settings: Settings):
    """How remote repositories are reached: [backup.storage_options] and the retry policy."""
    from sctk.backup.repo.remote import RemoteOptions, RetryPolicy

    backup = settings.backup
    return RemoteOptions(
        storage={k: dict(v) for k, v in backup.storage_options.items()},
        retry=RetryPolicy(attempts=backup.remote_attempts, backoff=backup.remote_backoff_seconds),
    )


def open_repo(settings: Settings, url: str | None = None):
    """The repository at URL (default: the configured one), opened with the passphrase."""
    from sctk.backup import passphrase
    from sctk.backup.repo import Repository

    return Repository.open(
        url or repo_url(settings), passphrase.resolve(settings), remote_options(settings)
    )


def init_repo(settings: Settings, url: str | None = None):
    """Create a repository at URL (default: the configured one)."""
    from sctk.backup import passphrase
    from sctk.backup.repo import Repository

    return Repository.init(
        url or repo_url(settings), passphrase.resolve(settings), options=remote_options(settings)
    )


def repo_exists(url: str, settings: Settings | None = None) -> bool:
    """Whether URL holds an initialised repository (its config file; no key needed)."""
    from sctk.backup.repo.backend import open_backend

    backend = open_backend(url, remote_options(settings) if settings is not None else None)
    return backend.probe() == "present" and backend.size("config") is not None


def probe_remote(settings: Settings) -> dict | None:
    """One quick look at a remote repository (no retries, the monitor's connect timeout): its
    latency, or why it cannot be used, as PROBLEM 'driver' (the fsspec extra is missing),
    'endpoint' (nothing answers there) or 'credentials' (refused). None for a local one."""
    import time

    from sctk.backup.repo.backend import open_backend
    from sctk.backup.repo.errors import RepoError
    from sctk.backup.repo.remote import (
        MissingDriver,
        RemoteDenied,
        RemoteOptions,
        RemoteUnreachable,
        RetryPolicy,
    )

    url = repo_url(settings)
    if local_path(url) is not None or url.startswith("memory://"):
        return None
    options = RemoteOptions(
        storage=remote_options(settings).storage,
        retry=RetryPolicy(attempts=1),
        connect_timeout=settings.monitor.connect_timeout_seconds,
    )
    result: dict = {"name": "backup repository", "target": display(url)}
    started = time.perf_counter()
    try:
        state = open_backend(url, options).probe()
    except RepoError as exc:
        problem = {MissingDriver: "driver", RemoteDenied: "credentials"}.get(type(exc))
        if problem is None:
            problem = "endpoint" if isinstance(exc, RemoteUnreachable) else "storage"
        return result | {"ok": False, "error": exc.message, "problem": problem}
    ms = (time.perf_counter() - started) * 1000.0
    return result | {"ok": True, "latency_ms": round(ms, 2), "state": state}
