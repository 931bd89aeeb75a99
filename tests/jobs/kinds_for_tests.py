"""Job kinds only the tests register: importing this module adds them (in any process).

A process pool started with 'spawn' imports this module again in its children when it
unpickles one of these functions, so they run there like any built-in kind.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sctk.errors import SctkError
from sctk.jobs.kinds import JobContext, job_kind


@job_kind("test.record", "Append the job's id to the file params['path'], then succeed.")
def record_run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    # params['seconds']: how long the job takes first, so that a batch outlasts the moment a
    # loaded machine may hold one worker process back from its first claim
    time.sleep(float(params.get("seconds", 0.0)))
    # O_APPEND makes each short write land whole at the end, whichever process writes it,
    # so the file is an exact log of the runs.
    fd = os.open(params["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.job_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return {"job": ctx.job_id}


@job_kind("test.user_error", "Fail with an error a retry cannot fix.")
def user_error(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    raise SctkError("The dataset 'missing' does not exist; import it first.")


@job_kind("test.bad_result", "Return something that is not JSON.")
def bad_result(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"value": {1, 2, 3}}


@job_kind("test.log", "Write log lines and progress, then succeed.")
def log_lines(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    for i in range(int(params.get("lines", 2))):
        ctx.log(f"line {i}")
    ctx.progress(1.0, "done")
    return {"home": ctx.home}


@job_kind("test.admin_only", "A kind only admins may submit.", permission="users.manage")
def admin_only(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {}


@job_kind(
    "test.hang_first_try", "Hang (reporting progress) on the first try; succeed at once later."
)
def hang_first_try(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    # The marker file tells a rerun from the first try, whichever process runs it.
    try:
        fd = os.open(params["marker"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        ctx.progress(1.0, "rerun")
        return {"rerun": True}
    os.close(fd)
    for i in range(1200):
        time.sleep(0.1)
        ctx.progress(min(i / 1200, 0.99), "first try")
    return {"rerun": False}


@job_kind("test.owner", "Return who the job runs for and the parameters it was given.")
def report_owner(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"owner": ctx.owner, "params": params}


@job_kind(
    "test.stubborn", "Sleep without looking whether to stop; 'swallow': ignore interruptions."
)
def stubborn(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    deadline = time.monotonic() + float(params.get("seconds", 60.0))
    while time.monotonic() < deadline:
        try:
            time.sleep(max(deadline - time.monotonic(), 0.0))
        except BaseException:  # a job that will not stop, on purpose
            if not params.get("swallow"):
                raise
    return {"slept": True}
