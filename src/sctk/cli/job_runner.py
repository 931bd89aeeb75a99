"""Running a job kind from the CLI: here and now with a progress bar, or following a
submitted job until it ends. Shared by `sctk data transform` and `sctk uq train`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from sctk.cli.common import db_session, err_console, operator


def run_inline(home: Path, title: str, func, params: dict[str, Any], as_json: bool) -> Any:
    """FUNC(params, ctx) in this process, its progress on a bar (hidden for --json)."""
    from rich.progress import Progress

    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task(title, total=1.0)
        context = InlineContext(
            home, lambda f, m: bar.update(task, completed=f, description=m), verbose=not as_json
        )
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
    from rich.progress import Progress

    hinted = False
    started = time.monotonic()
    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task(f"job {job_id}", total=1.0)
        while True:
            with db_session(ctx) as session:
                job = queue.get(session, job_id)
                view = queue.as_dict(job)
            bar.update(task, completed=view["progress"], description=view["message"] or "queued")
            if view["status"] in queue.FINISHED:
                return view
            if view["status"] == "queued" and not hinted and time.monotonic() - started > 10:
                err_console.print(
                    f"job {job_id} is still queued: is a worker running ('sctk serve' runs one)?",
                    highlight=False,
                )
                hinted = True
            time.sleep(0.25)  # polling another process's progress: there is nothing to await
