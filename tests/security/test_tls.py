"""`sctk serve` refuses plain HTTP off loopback and serves HTTPS with a real certificate."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import free_port, run_sctk, wait_until
from tests.security.conftest import assert_cli_error, sqlite_only


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def self_signed(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key: (cert, key)."""
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key = _write_key(key_path)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sctk test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serving(home: Path, logs: Path, *args: str) -> Iterator[subprocess.Popen]:
    """`sctk serve ARGS` as a user would start it; terminated (SIGTERM) when the block ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env["SCTK_HOME"] = str(home)
    with open(logs, "w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sctk", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _poll(proc: subprocess.Popen, logs: Path, get) -> httpx.Response:
    def answered():
        if proc.poll() is not None:
            raise AssertionError(f"sctk serve exited with {proc.returncode}: {logs.read_text()}")
        return get()

    return wait_until(answered, timeout=60, interval=0.1, what="sctk serve to answer")


def test_serve_refuses_plain_http_off_loopback_and_broken_tls(tmp_path):
    home = tmp_path / "home"
    good_cert, good_key = self_signed(tmp_path, "good")
    other_key = tmp_path / "other.key"
    _write_key(other_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    port = free_port()
    cases = {
        "plain off loopback": (
            ("--host", "0.0.0.0"),
            "Refusing to serve plain HTTP on 0.0.0.0",
        ),
        "key of another certificate": (
            ("--tls-cert", str(good_cert), "--tls-key", str(other_key)),
            f"Cannot use {good_cert} with {other_key} for TLS",
        ),
        "garbage certificate": (
            ("--tls-cert", str(garbage), "--tls-key", str(good_key)),
            f"Cannot use {garbage} with {good_key} for TLS",
        ),
    }
    with ThreadPoolExecutor(3) as pool:
        results = {
            name: pool.submit(run_sctk, "serve", "--port", str(port), *args, home=home)
            for name, (args, _) in cases.items()
        }
    for name, (_, fragment) in cases.items():
        result = results[name].result()
        assert_cli_error(result, fragment)
        assert "serving on" not in result.stdout, (name, result.stdout)
    assert not _listening(port)
    assert not home.exists(), "a refused serve must not initialise the data directory"


@sqlite_only
def test_insecure_allows_plain_http_on_all_interfaces(home, tmp_path):
    port = free_port()
    logs = tmp_path / "serve.log"
    args = ("--host", "0.0.0.0", "--port", str(port), "--insecure")
    with serving(home, logs, *args) as proc:
        r = _poll(proc, logs, lambda: httpx.get(f"http://127.0.0.1:{port}/health/live"))
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert "strict-transport-security" not in r.headers  # only over TLS
    assert proc.returncode is not None
    assert f"sctk serving on http://0.0.0.0:{port}" in logs.read_text()


@sqlite_only
def test_serves_https_with_a_self_signed_certificate(home, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    logs = tmp_path / "serve.log"
    trust = ssl.create_default_context(cafile=str(cert))
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--port", str(port))
    with serving(home, logs, *args) as proc:
        url = f"https://127.0.0.1:{port}/health/live"
        r = _poll(proc, logs, lambda: httpx.get(url, verify=trust))
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert r.url.scheme == "https"
        # browsers are told to keep to HTTPS (on every answer, the docs page too)
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        docs = httpx.get(f"https://127.0.0.1:{port}/docs", verify=trust)
        assert docs.headers["strict-transport-security"] == "max-age=31536000"
        # the certificate presented is the one given, not some default
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            served = tls.getpeercert(binary_form=True)
        assert served == x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        # plain HTTP on the TLS port gets no answer
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5)
        # and a client that checks certificates against the system store refuses it
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=5)
    assert f"sctk serving on https://127.0.0.1:{port}" in logs.read_text()
