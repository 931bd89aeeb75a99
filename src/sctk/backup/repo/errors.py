"""The one error type of the repository engine."""

from __future__ import annotations

from sctk.errors import SctkError


class RepoError(SctkError):
    """A repository problem a user can act on, told in one sentence naming the thing."""

    title = "Backup repository error"
