"""`sctk doctor`: findings with fixes for start-up, performance and data problems."""

from __future__ import annotations

import json
import socket

from sctk.ops.doctor import diagnose, worst
from sctk.pipeline.service import import_file
from sctk.runtime import Runtime
from sctk.storage import migrate
from sctk.storage.engine import make_engine, session_scope
from tests.helpers import run_sctk
from tests.security.conftest import sqlite_only


def by_name(findings, area: str, name: str):
    return [f for f in findings if f.area == area and f.name == name]


def test_a_damaged_dataset_file_is_named_with_the_restore_command(settings, engine, tmp_path):
    csv = tmp_path / "obs.csv"
    csv.write_text("x,y\n1,2\n3,4\n")
    with session_scope(engine) as s:
        stored = import_file(s, settings.home, csv, name="obs").dataset.path
    assert [
        f.severity for f in by_name(diagnose(Runtime(settings), ["data"]), "data", "files")
    ] == ["ok"]

    path = settings.home / stored
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, different bytes
    path.write_bytes(bytes(data))
    files = by_name(diagnose(Runtime(settings), ["data"]), "data", "files")
    assert len(files) == 1 and files[0].severity == "fail"
    assert "dataset 'obs'" in files[0].message and "SHA-256 differs" in files[0].message
    assert files[0].fix == f"sctk restore --latest --file {stored}"

    path.unlink()
    (missing,) = by_name(diagnose(Runtime(settings), ["data"]), "data", "files")
    assert missing.message.endswith(f"{stored} is missing")


def test_an_old_schema_fails_start_up_and_holds_back_the_deeper_checks(settings):
    engine = make_engine(settings)
    try:
        migrate.downgrade(engine, "0004")
    finally:
        engine.dispose()
    findings = diagnose(Runtime(settings))
    (schema,) = by_name(findings, "startup", "migrations")
    assert schema.severity == "fail" and schema.fix == "sctk db upgrade"
    assert by_name(findings, "startup", "deeper_checks")[0].severity == "warn"
    assert not [f for f in findings if f.area == "data"]
    assert worst(findings) == "fail"


@sqlite_only
def test_cli_reports_a_taken_port_and_a_stale_pid_file_and_exits_by_severity(settings):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        pid_file = settings.home / "tmp" / "serve" / str(2**22 + 12345)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text("all\n")  # above pid_max: no such process
        r = run_sctk(
            "doctor", "startup", "--json",
            home=settings.home, env={"SCTK_SERVER__PORT": str(port)},
        )  # fmt: skip
    assert r.returncode == 2, r.stderr
    report = json.loads(r.stdout)
    found = {f["name"]: f for f in report["findings"]}
    assert found["port"]["severity"] == "fail" and f"127.0.0.1:{port}" in found["port"]["message"]
    assert "sctk config set server.port" in found["port"]["fix"]
    assert found["pid_file"]["severity"] == "warn" and found["pid_file"]["fix"] == f"rm {pid_file}"
    assert {f["area"] for f in report["findings"]} == {"startup"}


@sqlite_only
def test_cli_refuses_an_unknown_area(settings):
    r = run_sctk("doctor", "network", home=settings.home)
    assert r.returncode != 0
    assert "Unknown area 'network'; choose from startup, performance, data." in r.stderr + r.stdout
