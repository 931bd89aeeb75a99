"""A job's progress while the client waits for it: a bar in a notebook, a line elsewhere."""

from __future__ import annotations

import html
import sys
import time
from typing import Any, TextIO

from sctk.client.types import JobInfo

# Without a terminal (a log, CI) a line only this often, or when the status changes
LINE_EVERY_SECONDS = 5.0


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel; IPython is looked up, never imported."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and getattr(shell, "kernel", None) is not None


def describe(job: JobInfo) -> str:
    text = f"job {job['id']} {job['kind']}: {job['status']} {job['progress']:.0%}"
    return f"{text}, {job['message']}" if job.get("message") else text


class JobProgress:
    """Shows the job states it is given: in a notebook one display, updated in place; on a
    terminal one line rewritten; otherwise a line every few seconds."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream if stream is not None else sys.stderr
        self._handle: Any = None
        self._notebook = stream is None and _in_notebook()
        self._tty = not self._notebook and self._stream.isatty()
        self._last: tuple[str, float] | None = None

    def show(self, job: JobInfo) -> None:
        text = describe(job)
        if self._notebook:
            self._show_html(job, text)
        elif self._tty:
            self._stream.write("\r\x1b[2K" + text)
            self._stream.flush()
        elif self._due(job["status"]):
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _due(self, status: str) -> bool:
        now = time.monotonic()
        if (
            self._last is None
            or self._last[0] != status
            or now - self._last[1] >= LINE_EVERY_SECONDS
        ):
            self._last = (status, now)
            return True
        return False

    def _show_html(self, job: JobInfo, text: str) -> None:
        from IPython.display import HTML, display

        view = HTML(
            f'<progress value="{job["progress"]:.3f}" max="1" style="width: 20em"></progress>'
            f" <code>{html.escape(text)}</code>"
        )
        if self._handle is None:
            self._handle = display(view, display_id=True)
        else:
            self._handle.update(view)
