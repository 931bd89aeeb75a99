"""The errors of a refused sign-in, shared by password logins (users) and API tokens."""

from __future__ import annotations

from sctk.errors import SctkError


class AuthenticationFailed(SctkError):
    exit_code = 1
    http_status = 401
    title = "Authentication failed"


class AccountLocked(AuthenticationFailed):
    """Too many failed logins: from this address for this account, or for the account."""

    http_status = 429
    title = "Too many failed logins"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after
