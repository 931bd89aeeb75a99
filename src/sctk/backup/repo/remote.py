"""Talking to remote storage (S3-compatible object stores, SFTP) through fsspec over links
that drop: connection options, which failures are worth another try, and one sentence for
those that are not.

Credentials and endpoints come from the conventional sources of each driver (for S3 the AWS
environment variables, AWS_ENDPOINT_URL and the shared config files, read by botocore; for
SFTP an SSH key file or agent, read by paramiko) or from per-protocol storage options (sctk's
[backup.storage_options]); never from a command line. The drivers' own retry loops are turned
down so that one policy (RetryPolicy) decides, and a refused credential is never retried.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from sctk.backup.repo.errors import RepoError

# Stores whose PUT is atomic (an object appears whole or not at all, a multipart upload only
# when completed): objects are written under their final name, no temporary copy and move.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs"})
PART_SIZE = 8 * 1024 * 1024  # a pack (~16 MiB) goes up as a multipart upload of 8 MiB parts

# Name fragments of driver exceptions, for drivers whose classes we do not import (botocore,
# aiohttp, paramiko are optional).
_AUTH_NAMES = ("AuthenticationException", "NoCredentialsError", "PartialCredentialsError")
_UNREACHABLE_NAMES = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ClientConnectorError",
    "NoValidConnectionsError",
    "gaierror",
)
_TRANSIENT_NAMES = (
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ServerDisconnectedError",
    "ClientOSError",
    "ClientPayloadError",
    "IncompleteRead",
    "ResponseParserError",
    "SSHException",
    "ProxyConnectionError",
    "ChannelException",
)
_TRANSIENT_TEXT = (
    "internalerror",
    "serviceunavailable",
    "slowdown",
    "service unavailable",
    "socket is closed",
    "connection reset",
    "connection lost",
    "server connection dropped",
    "timed out",
)
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
}


class RemoteDenied(RepoError):
    """The storage refused the credentials (or access to the bucket or path)."""


class RemoteUnreachable(RepoError):
    """The storage did not answer (wrong endpoint, host down, network gone) after retries."""


class MissingDriver(RepoError):
    """The fsspec driver for the URL's scheme is not installed."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a remote operation is tried again."""

    attempts: int = 5
    backoff: float = 0.5  # first pause (seconds); doubled each time, with jitter
    max_backoff: float = 8.0

    def pause(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class RemoteOptions:
    """Per-protocol fsspec storage options ({"s3": {...}, "sftp": {...}}) and the retry policy."""

    storage: dict[str, dict[str, Any]] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 10.0  # seconds to wait for a connection (the health probe: less)


def s3_etag(data, part_size: int = PART_SIZE) -> str:
    """The ETag S3 gives DATA as uploaded here: the MD5 of a single PUT, or for a multipart
    upload (size >= 2 parts) the MD5 of the parts' MD5s and "-" their number."""
    import hashlib

    view = memoryview(data)
    if len(view) < 2 * part_size:
        return hashlib.md5(view, usedforsecurity=False).hexdigest()
    digests = [
        hashlib.md5(view[i : i + part_size], usedforsecurity=False).digest()
        for i in range(0, len(view), part_size)
    ]
    whole = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{whole}-{len(digests)}"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def classify(exc: BaseException) -> str | None:
    """'denied', 'unreachable', 'transient' or None (a failure another try will not change)."""
    if isinstance(exc, FileNotFoundError | RepoError):
        return None
    for e in _chain(exc):
        names = {c.__name__ for c in type(e).__mro__}
        if names & set(_AUTH_NAMES) or isinstance(e, PermissionError):
            return "denied"
        if "SSHException" in names and "no authentication methods" in str(e).lower():
            return "denied"  # paramiko: no key or agent offered anything
        if names & set(_UNREACHABLE_NAMES) or isinstance(e, ConnectionRefusedError):
            return "unreachable"
        if isinstance(e, OSError) and e.errno == errno.ECONNREFUSED:
            return "unreachable"
    for e in _chain(exc):
        names = {c.__name__ for c in type(e).__mro__}
        if names & set(_TRANSIENT_NAMES) or isinstance(
            e, TimeoutError | ConnectionError | EOFError
        ):
            return "transient"
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return "transient"
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 or status in (408, 429):
                return "transient"
        text = str(e).lower()
        if any(t in text for t in _TRANSIENT_TEXT):
            return "transient"
    return None


def endpoint_of(url: str, options: dict[str, Any] | None = None) -> str:
    """Where URL's storage lives, for messages: the S3 endpoint (from the storage OPTIONS or
    the AWS variables) or the SSH host:port."""
    import os

    parsed = urlparse(url)
    if parsed.scheme in ("sftp", "ssh"):
        return f"{parsed.hostname}:{parsed.port or 22}"
    options = options or {}
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get(
        "endpoint_url"
    )
    if endpoint:
        return str(endpoint)
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"


def reason_of(exc: BaseException) -> str:
    """A short reason without the driver's stack of wrappers."""
    for e in _chain(exc):
        # paramiko's NoValidConnectionsError keeps each address's socket error apart
        inner = list((getattr(e, "errors", None) or {}).values())
        for err in [e, *(x for x in inner if isinstance(x, BaseException))]:
            refused = getattr(err, "errno", None) == errno.ECONNREFUSED
            if isinstance(err, ConnectionRefusedError) or refused:
                return "connection refused"
        if isinstance(e, TimeoutError) or type(e).__name__.endswith("TimeoutError"):
            return "timed out"
    text = " ".join(str(exc).replace("[Errno None] ", "").split()).rstrip(".")
    text = text or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def failure(
    kind: str, exc: BaseException, url: str, shown: str, attempts: int, where: str
) -> RepoError:
    """The one sentence for a remote failure of KIND on the repository URL (shown as SHOWN)
    whose storage is at WHERE."""
    if kind == "denied":
        hint = (
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile, or "
            "[backup.storage_options.s3])"
            if urlparse(url).scheme.startswith("s3")
            else "check the SSH user and key (or the agent, or [backup.storage_options.sftp])"
        )
        return RemoteDenied(
            f"Repository {shown} at {where} refused the credentials ({reason_of(exc)}); {hint}."
        )
    return RemoteUnreachable(
        f"Cannot reach repository {shown} at {where} ({reason_of(exc)}, {attempts} attempt(s)); "
        "check the endpoint and the network, then run the command again (it continues where "
        "it stopped)."
    )


def _defaults(protocol: str, options: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The driver options: the user's, over defaults that leave retrying to RetryPolicy."""
    opts = dict(options)
    if protocol in ("s3", "s3a"):
        config = dict(opts.pop("config_kwargs", None) or {})
        config.setdefault("retries", {"total_max_attempts": 1})
        config.setdefault("connect_timeout", timeout)
        config.setdefault("read_timeout", 60)
        opts["config_kwargs"] = config
        opts.setdefault("use_listings_cache", False)  # another writer's files must show
    elif protocol in ("sftp", "ssh"):
        opts.setdefault("timeout", timeout)
        opts.setdefault("banner_timeout", timeout)
        opts.setdefault("auth_timeout", timeout)
    opts["skip_instance_cache"] = True  # a dropped connection is replaced, not shared
    return opts


def fs_factory(url: str, options: RemoteOptions | None) -> tuple[Callable[[], Any], str, str, str]:
    """(a function making a fresh file system for URL, the root path in it, the protocol,
    where the storage is); MissingDriver when the fsspec driver for URL's scheme is not
    installed."""
    import fsspec

    protocol = urlparse(url).scheme
    options = options or RemoteOptions()
    opts = _defaults(protocol, options.storage.get(protocol, {}), options.connect_timeout)
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = {"s3": "s3", "s3a": "s3", "sftp": "sftp", "ssh": "sftp"}.get(protocol)
        how = f"`pip install 'sctk[{extra}]'`" if extra else f"the fsspec driver for {protocol}"
        raise MissingDriver(
            f"Repository {url} needs the fsspec driver for {protocol}://, which is not "
            f"installed ({exc}); install it with {how}."
        ) from None
    except ValueError as exc:
        raise RepoError(f"Repository URL {url} is not understood: {exc}.") from None
    root = cls._strip_protocol(url)
    kwargs = {**cls._get_kwargs_from_urls(url), **opts}

    def make():
        fs = cls(**kwargs)
        if hasattr(fs, "retries"):
            fs.retries = 1  # s3fs' own loop: RetryPolicy decides
        return fs

    return make, root, protocol, endpoint_of(url, options.storage.get(protocol))
