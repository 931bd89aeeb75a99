"""The repository engine's errors: RepoError for what a user can act on, ChunkError for one
chunk that cannot be read back (a check or restore names it and goes on)."""

from __future__ import annotations

from sctk.errors import SctkError


class RepoError(SctkError):
    """A repository problem a user can act on, told in one sentence naming the thing."""

    title = "Backup repository error"


class ChunkError(Exception):
    """A stored chunk that cannot be read back (missing, truncated or failing authentication)."""

    def __init__(self, cid: str, pack: str | None, reason: str):
        super().__init__(reason)
        self.cid = cid
        self.pack = pack
        self.reason = reason
