"""Test helpers: free ports, polling with a deadline, a live uvicorn server, the real CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

# pip pointed at a closed loopback port: what the dependency report does when the package
# index cannot be reached, at once, and without a test reaching out to the network.
UNREACHABLE_INDEX = {
    "PIP_CONFIG_FILE": "/dev/null",
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "1",
}


# Health settings under which a test machine's own state cannot turn a check WARNING: a disk
# nearly full of other work, a load from the other tests. The thresholds have their own tests;
# a test of something else that expects "OK" loads these (CI failed on a fuller disk once).
CALM_MACHINE = {
    "health": {"disk_warning_free_percent": 0.002, "disk_critical_free_percent": 0.001},
    "monitor": {"load_warning_per_core": 999},
}
# the same as environment variables, for the real CLI
CALM_MACHINE_ENV = {
    f"SCTK_{section.upper()}__{key.upper()}": str(value)
    for section, values in CALM_MACHINE.items()
    for key, value in values.items()
}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_block() -> range:
    """This test process's own ports: below the kernel's ephemeral range, a block per worker.

    A port the kernel handed out for a bind to port 0 can be handed out again, to an outbound
    connection or to another process's port-0 bind (a Dask worker does one), in the seconds
    between a test choosing it and a slow-starting server binding it; that race failed CI once.
    The kernel never assigns ports below its ephemeral range on its own, and the blocks keep
    xdist's workers out of each other's way."""
    low = 20000
    high = max(low + 2000, _ephemeral_low())
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    size = (high - low) // 8
    start = low + (index % 8) * size
    return range(start, start + size)


_next_port: list[int] = []


def free_port() -> int:
    """A loopback port nothing listens on, never the same one twice in this process."""
    block = _port_block()
    if not _next_port:
        # a start that follows the pid: a rerun does not meet the last run's sockets in TIME_WAIT
        _next_port.append(block.start + (os.getpid() * 7919) % len(block))
    for _ in range(len(block)):
        port = _next_port[0]
        _next_port[0] = block.start + (port + 1 - block.start) % len(block)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free loopback port in {block.start}-{block.stop - 1}")


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll PREDICATE until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; reported on timeout
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last_exc}" if last_exc else ""))


class LiveServer:
    """The real app served by uvicorn on a loopback port, in a thread of the test process."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan="on",
                proxy_headers=False,  # as `sctk serve`: sctk alone reads X-Forwarded-For
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def run_queued_jobs(settings, timeout: float = 120) -> None:
    """Run the queued jobs to the end with one worker, as `sctk serve` would."""
    from sctk.jobs.worker import Worker

    worker = Worker(settings, concurrency=1)
    try:
        worker.run_until_idle(timeout=timeout)
    finally:
        worker.close()


def run_sctk(
    *args: str,
    home: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `sctk` command in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    full_env["COLUMNS"] = "200"  # keep rich from wrapping sentences the tests look for
    if home is not None:
        full_env["SCTK_HOME"] = str(home)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sctk", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=input,
    )


def run_task(settings, name: str, **kwargs):
    """Maintenance task NAME run as a command runs it: on a runtime of its own, closed after."""
    from sctk.ops import runner
    from sctk.runtime import Runtime

    with Runtime(settings) as rt:
        return runner.run_task(rt, name, **kwargs)


def run_group(settings, group: str, **kwargs):
    """Maintenance group GROUP run on a runtime of its own, closed after."""
    from sctk.ops import runner
    from sctk.runtime import Runtime

    with Runtime(settings) as rt:
        return runner.run_group(rt, group, **kwargs)
