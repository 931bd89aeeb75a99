"""Errors a user can cause, each carrying one sentence that names the thing and the fix."""


class SctkError(Exception):
    """A problem the user can fix; the CLI prints the message and exits non-zero."""

    exit_code = 1
    http_status = 400
    title = "Bad request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(SctkError):
    title = "Invalid configuration"


class DatabaseUnavailable(SctkError):
    http_status = 503
    title = "Database unavailable"


class NotFound(SctkError):
    http_status = 404
    title = "Not found"


class Conflict(SctkError):
    """The request clashes with the current state of the thing it names."""

    http_status = 409
    title = "Conflict"


class InsufficientStorage(SctkError):
    """A write ran out of space (ENOSPC, a quota, or SQLite's "database or disk is full")."""

    http_status = 507
    title = "Insufficient storage"


class DatabaseLocked(DatabaseUnavailable):
    """SQLite stayed locked by another connection past the busy timeout."""

    title = "Database locked"


class DatabaseTimeout(DatabaseUnavailable):
    """The database accepted the connection but did not answer in time."""

    title = "Database not answering"
