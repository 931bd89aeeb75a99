"""`sctk serve`: run the API with uvicorn, initialising the data directory when needed."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from sctk.cli.common import console, settings
from sctk.cli.init import initialise
from sctk.config import Settings
from sctk.storage.layout import is_data_dir

ROLES = ("all", "api", "worker", "scheduler")


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Bind address (default from settings)."),
    port: int | None = typer.Option(None, "--port", help="TCP port (default from settings)."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate chain."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key."),
    insecure: bool | None = typer.Option(
        None, "--insecure", help="Allow plain HTTP on a non-loopback address."
    ),
    role: str = typer.Option(
        "all",
        "--role",
        help="all: API, job workers, scheduler and alerting; api: the API only; worker: job "
        "workers only; scheduler: the scheduler, metrics and alerting only.",
    ),
) -> None:
    """Serve sctk: the REST API with uvicorn (HTTPS when given a certificate and key), or
    one role of a deployment split over several processes or machines."""
    from sctk.errors import SctkError

    if role not in ROLES:
        raise SctkError(f"Unknown role '{role}'; use one of {', '.join(ROLES)}.")
    if role == "worker":
        from sctk.cli.worker import worker

        return worker(ctx, concurrency=None, loops=None, grace=30.0, until_idle=False)
    if role == "scheduler":
        from sctk.cli.scheduler import scheduler

        return scheduler(ctx)
    from sctk.api.app import ROLE_ENV

    os.environ[ROLE_ENV] = role  # uvicorn's worker processes read it in served_app
    flags = {
        "host": host,
        "port": port,
        "workers": workers,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "insecure": insecure,
    }
    _serve_api(settings(ctx, {"server": {k: v for k, v in flags.items() if v is not None}}))


def _serve_api(s: Settings) -> None:
    """Run uvicorn on the app of S (initialising its data directory first if needed), the
    process recorded on the directory while it serves."""
    import uvicorn

    from sctk import logs
    from sctk.api.binding import check_binding

    check_binding(s.server)
    if not is_data_dir(s.home):
        initialise(s.home)
    # the worker processes uvicorn starts rebuild settings from the environment
    os.environ["SCTK_HOME"] = str(s.home)
    log_path = logs.configure(s, console_level="INFO")
    scheme = "https" if s.server.tls_cert else "http"
    console.print(
        f"sctk serving on {scheme}://{s.server.host}:{s.server.port} "
        f"(API docs at /docs, health at /health/ready, logs in {log_path})",
        highlight=False,
    )
    from sctk import runstate
    from sctk.api.app import SERVE_URL_ENV

    # the served app records its process (sctk.runstate): restore, upgrade and rollback
    # refuse to swap the directory under it, the compliance audit and doctor report the
    # address served, which --port may have made another than the configured one; the
    # handler removes the record of a SIGTERM'd process, whose `finally` below never runs
    runstate.clear_pid_on_sigterm(s.home)
    host = f"[{s.server.host}]" if ":" in s.server.host else s.server.host
    os.environ[SERVE_URL_ENV] = f"{scheme}://{host}:{s.server.port}"
    try:
        uvicorn.run(
            "sctk.api.app:served_app",
            factory=True,
            host=s.server.host,
            port=s.server.port,
            workers=s.server.workers,
            ssl_certfile=str(s.server.tls_cert) if s.server.tls_cert else None,
            ssl_keyfile=str(s.server.tls_key) if s.server.tls_key else None,
            log_config=None,  # keep sctk's handlers: JSON file plus console
            access_log=False,  # sctk logs each request itself, with its request id
            # X-Forwarded-For is believed only from security.trusted_proxies (sctk's own
            # middleware), never from uvicorn's default of any loopback peer
            proxy_headers=False,
        )
    finally:
        runstate.clear_pid(s.home)
