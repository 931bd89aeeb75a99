"""Running a job kind from the CLI: here and now with its progress, or following a
submitted job until it ends (a bar on a terminal, a line every few seconds off one). Shared
by `sctk data transform` and `sctk uq train`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from sctk.cli.common import db_session, err_console, operator
from sctk.cli.progress import progress


def run_inline(
    home: Path, title: str, func, params: dict[str, Any], as_json: bool, show_log: bool = True
) -> Any:
    """FUNC(params, ctx) in this process, its progress on stderr (hidden for --json); the
    job's log lines too unless not SHOW_LOG (where the command's result line says the same)."""
    with progress(title, err_console, enabled=not as_json) as update:
        context = InlineContext(home, update, verbose=show_log and not as_json)
        return func(params, context)


class InlineContext:
    """The JobContext of a job kind run in this process (no queue, no worker)."""

    job_id = 0

    def __init__(self, home: Path, on_progress, verbose: bool):
        self.owner = operator()  # what the job makes is recorded as the shell user's
        self._home = str(home)
        self._on_progress = on_progress
        self._verbose = verbose

    @property
    def home(self) -> str:
        return self._home

    def progress(self, fraction: float, message: str = "") -> None:
        self._on_progress(fraction, message)

    def cancelled(self) -> bool:
        """Never: a job run here stops with the command (Ctrl-C)."""
        return False

    def checkpoint(self) -> None:
        """Nothing to check: see cancelled()."""

    def log(self, line: str) -> None:
        if self._verbose:
            err_console.print(line, highlight=False, style="dim")


def wait_for(ctx: typer.Context, queue, job_id: int, as_json: bool) -> dict[str, Any]:
    hinted = False
    started = time.monotonic()
    with progress(f"job {job_id}", err_console, enabled=not as_json) as update:
        while True:
            with db_session(ctx) as session:
                job = queue.get(session, job_id)
                view = queue.as_dict(job)
            update(view["progress"], view["message"] or view["status"])
            if view["status"] in queue.FINISHED:
                return view
            if view["status"] == "queued" and not hinted and time.monotonic() - started > 10:
                err_console.print(
                    f"job {job_id} is still queued: is a worker running ('sctk serve' runs one)?",
                    highlight=False,
                )
                hinted = True
            time.sleep(0.25)  # polling another process's progress: there is nothing to await
