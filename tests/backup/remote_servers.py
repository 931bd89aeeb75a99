"""Real remote storage for the backup tests: moto's standalone S3 API server, Debian's OpenSSH
sshd, and a loopback TCP relay that can be cut and restored (a link that drops, in front of a
server that keeps its state). Each is started by the tests, on a loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from tests.helpers import free_port

SSHD = "/usr/sbin/sshd"


def wait_port(port: int, proc: subprocess.Popen | None = None, deadline: float = 30.0) -> None:
    """Poll until 127.0.0.1:PORT accepts a connection (or PROC died, or the deadline)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {deadline:.0f} s")


def stop_tree(proc: subprocess.Popen) -> None:
    """End PROC and the processes it started (sshd forks one per connection), by pid."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for p in [psutil.Process(proc.pid), *children] if proc.poll() is None else children:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    psutil.wait_procs(children, timeout=5)


class Relay:
    """A TCP relay from a loopback port to a server; cut() drops every connection and stops
    listening (clients see resets, then refused connections), restore() listens again on the
    same port. It also counts the S3 list requests it carried (`?list-type=2`)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_port()
        self.lists = 0
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
                s.close()
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    server.close()
                    return
                self._socks |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    seen = tail + data
                    with self._lock:
                        self.lists += seen.count(b"list-type=2")
                    tail = data[-16:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class MotoServer:
    """moto's standalone S3 server with IAM authentication on: the first three requests
    (create a user, give it a policy, make its access key) go unauthenticated, every later
    one needs that key, so a wrong key is refused as it would be on AWS."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
        self.log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_port(self.port, self.proc)
        self.url = f"http://127.0.0.1:{self.port}"
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="sctk")
        iam.put_user_policy(
            UserName="sctk",
            PolicyName="all",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
            '"Action": "*", "Resource": "*"}]}',
        )
        key = iam.create_access_key(UserName="sctk")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The AWS environment variables a client uses to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint or self.url,
        }

    def stop(self) -> None:
        stop_tree(self.proc)
        self.log.close()


class SshServer:
    """Debian's OpenSSH sshd on a loopback port, as the current user, with a generated host
    key and user key (and a second user key it does not accept). stop() ends it and every
    session it serves; start() brings it back on the same port with the same files."""

    def __init__(self, workdir: Path):
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is missing: apt-get install -y openssh-server")
        self.dir = workdir
        self.port = free_port()
        self.user = psutil.Process().username()
        for name in ("host_key", "user_key", "stranger_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)],
                check=True,
            )
        shutil.copy(workdir / "user_key.pub", workdir / "authorized_keys")
        os.chmod(workdir / "authorized_keys", 0o600)
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.config = workdir / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {workdir / 'host_key'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "MaxStartups 50\n"
            "MaxSessions 50\n"
            "Subsystem sftp internal-sftp\n"
        )
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc)
            self.proc = None
            self.log.close()

    def url(self, path: Path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    def options(self, key: str = "user_key") -> dict:
        """[backup.storage_options.sftp]: this key only (no agent, no ~/.ssh keys)."""
        return {
            "key_filename": str(self.dir / key),
            "look_for_keys": False,
            "allow_agent": False,
        }
