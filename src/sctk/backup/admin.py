"""Making the repository and changing its passphrase: the repository operations that have no
run of their own, each written down in the audit log through the caller's runtime.

They sit above `location` (which opens repositories) and `runs` (which records): keeping
them out of those two lets each of them stay a leaf that the other backup modules import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sctk.backup import runs
from sctk.backup.location import display, init_repo, open_repo, repo_exists, repo_url
from sctk.backup.passphrase import configuration_problem

if TYPE_CHECKING:
    from sctk.runtime import Runtime


def create_repo(rt: Runtime, url: str | None = None, actor: str = "system") -> str:
    """Create a repository at URL (default: the configured one) and audit it; its address."""
    url = url or repo_url(rt.settings)
    created = init_repo(rt.settings, url)
    runs.audit_only(rt, "backup.init", actor, display(created.url), {"repository": url})
    return display(created.url)


def ensure_repo(rt: Runtime, actor: str = "system") -> str | None:
    """Create the configured repository when it is missing and a passphrase is configured,
    so that backups run from the first day without a manual `sctk backup init`. The
    repository's address when one was created (and audited), else None."""
    settings = rt.settings
    url = repo_url(settings)
    if configuration_problem(settings) is not None or repo_exists(url, settings):
        return None
    return create_repo(rt, url, actor)


def change_passphrase(
    rt: Runtime, new_passphrase: str, url: str | None = None, actor: str = "system"
) -> str:
    """Re-wrap the repository key with NEW_PASSPHRASE (at least 12 characters; the key
    derivation upgraded to argon2id) and audit it; the repository's display URL."""
    repo = open_repo(rt.settings, url)
    repo.change_passphrase(new_passphrase)
    where = display(repo.url)
    runs.audit_only(rt, "backup.passphrase_changed", actor, where, {"repository": where})
    return where
