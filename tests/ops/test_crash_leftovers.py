"""Crash leftovers: a `data import` killed (SIGKILL) after writing its temporary file leaves
it behind; `sctk doctor data` lists it, the `tmp` maintenance task deletes it once stale, and
a live writer's temporary is never touched."""

from __future__ import annotations

import json
import os
import signal

from sctk.fsutil import make_temp, stale_temporaries
from sctk.ops.doctor import diagnose
from sctk.pipeline.service import import_file
from sctk.runtime import Runtime
from sctk.storage.engine import session_scope
from tests.helpers import run_sctk, run_task


def _backdate(path, minutes: float) -> None:
    t = path.stat().st_mtime - minutes * 60
    os.utime(path, (t, t))


def test_a_killed_imports_temporary_is_listed_by_doctor_and_removed_by_the_tmp_task(
    settings, engine, tmp_path
):
    csv = tmp_path / "runs.csv"
    csv.write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(50)))
    r = run_sctk(
        "data", "import", str(csv), home=settings.home, env={"SCTK_CRASH_AT": "import.written"}
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    (left,) = (settings.home / "data").glob(".runs.*.tmp")
    assert left.name.startswith(".runs.p")  # the one naming convention, with the writer's pid

    # a re-import completes beside it and does not clean it up
    with session_scope(engine) as s:
        import_file(s, settings.home, csv, name="runs")
    assert left.exists() and (settings.home / "data" / "runs.parquet").exists()

    # young, it may be a slow writer on another machine: neither listed nor deleted yet
    assert run_task(settings, "tmp").details["deleted"] == []
    _backdate(left, 61)  # past maintenance.stale_temp_minutes (60)

    r = run_sctk("doctor", "data", "--json", home=settings.home)
    found = {f["name"]: f for f in json.loads(r.stdout)["findings"]}
    assert found["leftovers"]["severity"] == "warn"
    assert f"data/{left.name}" in found["leftovers"]["message"]
    assert found["leftovers"]["fix"] == "sctk maintenance run tmp"
    assert r.returncode == 1  # a warning

    record = run_task(settings, "tmp")
    assert f"data/{left.name}" in record.details["deleted"]
    assert not left.exists() and (settings.home / "data" / "runs.parquet").exists()
    (leftovers,) = [f for f in diagnose(Runtime(settings), ["data"]) if f.name == "leftovers"]
    assert leftovers.severity == "ok"


def test_a_live_writers_temporary_is_not_stale_however_old(tmp_path):
    fd, mine = make_temp(tmp_path, "big-import")  # this process: a live writer
    os.close(fd)
    _backdate(mine, 600)
    foreign = tmp_path / ".other.p4194999-abcdefgh.tmp"  # above pid_max: its writer is gone
    foreign.write_bytes(b"x")
    _backdate(foreign, 600)
    assert [t.path for t in stale_temporaries(tmp_path, 60)] == [foreign]
