"""`sctk serve`: run the API with uvicorn, initialising the data directory when needed."""

from __future__ import annotations

import os

import typer

from sctk.cli.common import console, settings
from sctk.cli.init import initialise
from sctk.storage.layout import is_data_dir


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Bind address (default from settings)."),
    port: int | None = typer.Option(None, "--port", help="TCP port (default from settings)."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes."),
) -> None:
    """Serve the REST API (and, later, the dashboard and workers) with uvicorn."""
    import uvicorn

    from sctk import logs

    flags = {"host": host, "port": port, "workers": workers}
    overrides = {"server": {k: v for k, v in flags.items() if v is not None}}
    s = settings(ctx, overrides)
    if not is_data_dir(s.home):
        initialise(s.home)
    # the worker processes uvicorn starts rebuild settings from the environment
    os.environ["SCTK_HOME"] = str(s.home)
    log_path = logs.configure(s, console_level="INFO")
    console.print(
        f"sctk serving on http://{s.server.host}:{s.server.port} "
        f"(API docs at /docs, health at /health/ready, logs in {log_path})",
        highlight=False,
    )
    uvicorn.run(
        "sctk.api.app:create_app",
        factory=True,
        host=s.server.host,
        port=s.server.port,
        workers=s.server.workers,
        log_config=None,  # keep sctk's handlers: JSON file plus console
        access_log=False,  # sctk logs each request itself, with its request id
    )
