"""Where and how the API may listen: TLS files that load, and no plain HTTP off loopback."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from sctk.config import ServerSettings
from sctk.errors import SctkError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def check_tls_files(cert: Path, key: Path) -> None:
    for what, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise SctkError(f"The TLS {what} file {path} does not exist.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise SctkError(
            f"Cannot use {cert} with {key} for TLS ({exc.__class__.__name__}: "
            f"{getattr(exc, 'reason', None) or exc}); give a PEM certificate and its private key."
        ) from None


def check_binding(server: ServerSettings) -> None:
    """Refuse a configuration that would expose the API without TLS, or with broken TLS."""
    if (server.tls_cert is None) != (server.tls_key is None):
        raise SctkError("TLS needs both --tls-cert and --tls-key; give both or neither.")
    if server.tls_cert is not None and server.tls_key is not None:
        check_tls_files(server.tls_cert, server.tls_key)
        return
    if not is_loopback(server.host) and not server.insecure:
        raise SctkError(
            f"Refusing to serve plain HTTP on {server.host}, which other machines can reach; "
            "give --tls-cert and --tls-key, put a TLS proxy in front and bind to 127.0.0.1, "
            "or pass --insecure."
        )
