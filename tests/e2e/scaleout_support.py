"""Pieces of the scale-out test: subprocesses killed as process groups, an nginx
configuration derived from deploy/nginx/sctk.conf, and a Dask cluster started from its CLI.

Everything listens on loopback ports chosen at run time and writes into temporary
directories, so several runs (and the rest of the suite) never collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_NGINX = ROOT / "deploy" / "nginx" / "sctk.conf"
NGINX = "/usr/sbin/nginx"

# The access log says which upstream(s) served each request: "a, b" means nginx retried.
LOG_FORMAT = (
    "log_format scaleout '$request_method $uri $status "
    'up="$upstream_addr" ups="$upstream_status" t=$request_time at=$msec\';'
)


class Processes:
    """Subprocesses, each the leader of its own process group with its output in a file;
    close() ends every group (SIGTERM, then SIGKILL for what is left)."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}
        logdir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = (self.logdir / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: its children die with it
            )
        finally:
            out.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str, lines: int = 40) -> str:
        path = self.logdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self, name: str) -> bool:
        """True while NAME runs; an AssertionError with its output once it has exited."""
        code = self.procs[name].poll()
        if code is not None:
            raise AssertionError(f"{name} exited with {code}:\n{self.log(name)}")
        return True

    def kill9(self, name: str) -> None:
        """SIGKILL the process NAME itself (not its group), as `kill -9 PID` would."""
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self, last: tuple[str, ...] = (), grace: float = 5.0) -> None:
        """End every group: first all but LAST (what the others use), then LAST."""
        first = [p for name, p in self.procs.items() if name not in last]
        self._stop(first, grace)
        self._stop([self.procs[name] for name in last if name in self.procs], grace)

    @staticmethod
    def _stop(procs: list[subprocess.Popen], grace: float) -> None:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in procs:
            # the group outlives its leader when a child ignores SIGTERM: kill what is left
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the caller's SCTK_* settings, plus EXTRA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sctk_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sctk", *args]


def dask_argv(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("dask")), *args]


def wait_http(url: str, procs: Processes, name: str, timeout: float = 90.0) -> None:
    """Poll URL until it answers 200, failing at once (with its log) if NAME exits."""

    def up() -> str | bool:
        if procs.procs[name].poll() is not None:
            return "exited"  # truthy: stops the wait at once
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        answer = wait_until(up, timeout=timeout, interval=0.2, what=f"{name} at {url}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{procs.log(name)}") from None
    procs.alive(name)  # raises with its log when it exited
    assert answer is True


# --- nginx -------------------------------------------------------------------------------------


def _blocks(text: str, header: str) -> list[str]:
    """Every `HEADER ... { ... }` block of TEXT (HEADER a regex anchored at a line start),
    braces balanced, comments removed."""
    text = re.sub(r"#[^\n]*", "", text)
    found = []
    for match in re.finditer(rf"(?m)^\s*{header}[^{{;]*\{{", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        found.append(text[match.start() : i].strip())
    return found


def _body(block: str) -> str:
    return block[block.index("{") + 1 : block.rindex("}")]


def nginx_config(prefix: Path, listen_port: int, api_ports: list[int]) -> str:
    """An nginx.conf running the shipped upstream, map and location rules of
    deploy/nginx/sctk.conf in plain HTTP on 127.0.0.1:LISTEN_PORT, in front of API_PORTS.

    From the TLS server block it keeps every directive but listen, server_name, http2 and
    ssl_*: those are about the front door, not about how requests reach the API processes.
    """
    shipped = SHIPPED_NGINX.read_text()
    (upstream,) = _blocks(shipped, r"upstream\s+sctk_api")
    servers = re.findall(r"(?m)^\s*server\s+\S+", _body(upstream))
    assert len(servers) == len(api_ports), f"the shipped upstream has {len(servers)} servers"
    ports = iter(api_ports)
    upstream = re.sub(
        r"(?m)^(\s*server\s+)\S+",
        lambda m: f"{m.group(1)}127.0.0.1:{next(ports)}",
        upstream,
        count=len(api_ports),
    )
    maps = _blocks(shipped, r"map\s")
    (tls_server,) = [b for b in _blocks(shipped, r"server\s*") if "listen 443" in b]
    locations = _blocks(_body(tls_server), r"location\s")
    rest = _body(tls_server)
    for location in locations:
        rest = rest.replace(location, "")
    kept = [
        line.strip()
        for line in rest.splitlines()
        if line.strip() and not re.match(r"(listen|server_name|http2|ssl_\w+)\b", line.strip())
    ]
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    server = "\n        ".join([f"listen 127.0.0.1:{listen_port};", *kept, *locations])
    return f"""
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    {LOG_FORMAT}
    access_log {prefix}/access.log scaleout;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    {upstream}
    {chr(10).join(maps)}
    server {{
        {server}
    }}
}}
"""


def fail_timeout() -> float:
    """Seconds the shipped upstream keeps a failed API process out (its fail_timeout)."""
    found = set(re.findall(r"fail_timeout=(\d+)s\b", SHIPPED_NGINX.read_text()))
    assert len(found) == 1, f"expected one fail_timeout in {SHIPPED_NGINX}, found {found}"
    return float(found.pop())


def start_nginx(procs: Processes, prefix: Path, listen_port: int, api_ports: list[int]) -> Path:
    """Check and start nginx (not daemonised) with the derived configuration; its path."""
    assert Path(NGINX).exists(), f"{NGINX} is missing: install it (apt-get install -y nginx)"
    # As root, nginx's workers run as nobody: the prefix must be reachable by them.
    prefix.mkdir(mode=0o755, parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(mode=0o755, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, listen_port, api_ports))
    test = subprocess.run(
        [NGINX, "-t", "-q", "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert test.returncode == 0, f"nginx rejects the config:\n{test.stderr}\n{conf.read_text()}"
    argv = [NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"]
    procs.start("nginx", argv, clean_env())
    return conf


def access_log(prefix: Path) -> list[str]:
    path = prefix / "access.log"
    return path.read_text().splitlines() if path.exists() else []
