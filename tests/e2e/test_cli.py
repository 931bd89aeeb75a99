"""The real `sctk` command in subprocesses: init, health, config, db, serve, and bad input.

`sctk db downgrade nope` and the other db commands are run on both backends by
tests/storage/test_migrations.py.

Each subprocess costs about a second of imports, so independent invocations run side by side.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from sctk import __version__, config
from sctk.ops.init_home import init_home
from sctk.storage import migrate
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.layout import SUBDIRS
from sctk.storage.models import CheckResult
from tests.helpers import CALM_MACHINE_ENV, free_port, run_sctk, wait_until

pytestmark = pytest.mark.e2e

# backups configured: without a passphrase the backup check WARNs
CONFIGURED = {**CALM_MACHINE_ENV, "SCTK_BACKUP_PASSPHRASE": "amber-lattice-tundra-0451"}


def run_parallel(*calls: tuple[tuple[str, ...], dict]) -> list[subprocess.CompletedProcess[str]]:
    """run_sctk for each (args, kwargs), concurrently; results in the order given."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run_sctk, *args, **kwargs) for args, kwargs in calls]
        return [f.result() for f in futures]


def snapshot(root: Path) -> dict[str, tuple[int, int | None, bytes | None]]:
    """Every entry under ROOT with its mode, and for files their mtime and content.

    Directory mtimes are left out: the health checks prove a directory writable by creating
    and removing a probe file in it.
    """
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        if path.is_file():
            entry = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, path.read_bytes())
        else:
            entry = (stat.S_IMODE(st.st_mode), None, None)
        out[str(path.relative_to(root))] = entry
    return out


def assert_one_sentence_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command: non-zero exit, one line on stderr, no traceback anywhere."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def logged_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def check_results(settings) -> list[CheckResult]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            return list(session.scalars(select(CheckResult)).all())
    finally:
        engine.dispose()


def test_init_then_health_on_sqlite(tmp_path):
    home = tmp_path / "home"
    created = run_sctk("init", str(home))
    assert created.returncode == 0, created.stderr
    assert f"sctk data directory ready at {home}" in created.stdout
    assert "created  keys/" in created.stdout

    def kept() -> dict:
        return snapshot(home / "keys") | {"sctk.toml": (home / "sctk.toml").read_bytes()}

    before = kept()
    # a second init only reads, so it may run beside the health checks
    health, again = run_parallel(
        (("health",), {"home": home, "env": CONFIGURED}),
        (("init", str(home)), {}),
    )

    assert health.returncode == 0, health.stdout + health.stderr
    assert "overall: OK" in health.stdout
    for name in ("database", "migrations", "disk", "data_dir", "logs_dir"):
        assert name in health.stdout
    settings = config.load(home).settings
    assert settings.is_sqlite
    recorded = check_results(settings)
    assert {r.name for r in recorded} >= {"database", "migrations", "disk"}
    assert {r.status for r in recorded} == {"OK"}

    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert "created" not in again.stdout
    assert kept() == before


@pytest.mark.postgres
def test_init_then_health_on_postgres(tmp_path, pg_url):
    home = tmp_path / "home"
    created = run_sctk("init", str(home), "--database-url", pg_url)
    assert created.returncode == 0, created.stderr
    assert not (home / "sctk.db").exists()

    health = run_sctk("health", "--json", home=home, env=CONFIGURED)
    assert health.returncode == 0, health.stdout + health.stderr
    report = json.loads(health.stdout)
    assert report["status"] == "OK"
    database = next(c for c in report["checks"] if c["name"] == "database")
    assert database["values"]["backend"] == "postgresql"

    settings = config.load(home).settings
    assert settings.db_url == pg_url
    assert len(check_results(settings)) == len(report["checks"])


def test_unreachable_database(tmp_path):
    home = tmp_path / "home"
    init_home(home)
    port = free_port()
    env = {
        **CALM_MACHINE_ENV,
        "SCTK_DATABASE_URL": f"postgresql://sctk:pw-secret@127.0.0.1:{port}/sctk",
    }
    before = snapshot(home)

    table, as_json, upgrade = run_parallel(
        (("health",), {"home": home, "env": env}),
        (("health", "--json"), {"home": home, "env": env}),
        (("db", "upgrade"), {"home": home, "env": env}),
    )

    assert table.returncode == 2, table.stdout + table.stderr
    assert "Traceback" not in table.stdout + table.stderr
    assert "overall: CRITICAL" in table.stdout
    database_row = next(line for line in table.stdout.splitlines() if " database " in line)
    assert "CRITICAL" in database_row
    assert f"127.0.0.1:{port}" in table.stdout

    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert report["status"] == "CRITICAL"
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["database"] == "CRITICAL"
    assert statuses["migrations"] == "UNKNOWN"

    message = assert_one_sentence_error(upgrade)
    assert f"127.0.0.1:{port}" in message
    assert "pw-secret" not in upgrade.stderr + as_json.stdout + table.stdout

    assert snapshot(home) == before


BAD_CONFIGS = {
    "syntax": ("[server]\nport = = 8001\n", ["line 2"]),
    "unknown key": ("[server]\nprot = 8001\n", ["server.prot", "did you mean 'port'"]),
    "wrong type": ('[server]\nport = "eighty"\n', ["server.port", "'eighty'"]),
}


def test_bad_input_is_one_sentence_and_changes_nothing(tmp_path):
    calls, homes = [], {}
    for kind, (text, _words) in BAD_CONFIGS.items():
        home = tmp_path / kind.replace(" ", "-")
        init_home(home)
        (home / "sctk.toml").write_text(text)
        homes[kind] = (home, snapshot(home))
        calls.append((("config", "check"), {"home": home}))
        calls.append((("config", "show"), {"home": home}))

    results = run_parallel(*calls)

    for i, (kind, (_text, words)) in enumerate(BAD_CONFIGS.items()):
        home, before = homes[kind]
        for result in results[2 * i : 2 * i + 2]:
            message = assert_one_sentence_error(result)
            assert str(home / "sctk.toml") in message, (kind, message)
            for word in words:
                assert word in message, (kind, message)
        assert snapshot(home) == before, kind


def test_init_refuses_foreign_directory_unless_forced(tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("\\section{Intro}\n")
    before = snapshot(target)

    refused = run_sctk("init", str(target))
    message = assert_one_sentence_error(refused)
    assert str(target) in message and "--force" in message
    assert snapshot(target) == before

    forced = run_sctk("init", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (target / "sctk.toml").is_file()
    assert all((target / name).is_dir() for name in SUBDIRS)
    assert (target / "chapter1.tex").read_text() == "\\section{Intro}\n"


def test_config_show_version_and_help(tmp_path):
    home = tmp_path / "home"
    init_home(home)
    env = {
        "SCTK_DATABASE_URL": "postgresql://alice:pa55-w0rd@db.example.org:5433/sctk",
        "SCTK_SERVER__PORT": "9123",
    }
    shown, version, helped = run_parallel(
        (("config", "show", "--json"), {"home": home, "env": env}),
        (("--version",), {}),
        (("--help",), {}),
    )

    assert shown.returncode == 0, shown.stderr
    assert "pa55-w0rd" not in shown.stdout
    rows = json.loads(shown.stdout)
    assert rows["database_url"] == {
        "value": "postgresql://alice:***@db.example.org:5433/sctk",
        "source": "SCTK_DATABASE_URL",
    }
    assert rows["server.port"] == {"value": "9123", "source": "SCTK_SERVER__PORT"}
    assert rows["server.host"] == {"value": "127.0.0.1", "source": "default"}
    assert rows["home"] == {"value": str(home), "source": "SCTK_HOME"}
    assert all(set(v) == {"value", "source"} for v in rows.values())

    assert version.returncode == 0
    assert version.stdout.strip() == f"sctk {__version__}"

    assert helped.returncode == 0
    commands = {
        line.split()[1]
        for line in helped.stdout.splitlines()
        if line.startswith("│ ") and len(line.split()) > 2
    }
    assert {"init", "health", "serve", "config", "db"} <= commands, helped.stdout


def test_serve_initialises_new_home_and_logs_requests(tmp_path):
    home = tmp_path / "brand" / "new-home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update(CALM_MACHINE_ENV, COLUMNS="200")
    out = (tmp_path / "serve.out").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sctk", "--home", str(home), "serve", "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:

        def live():
            assert proc.poll() is None, "sctk serve exited"
            return httpx.get(f"{url}/health/live", timeout=2).status_code == 200

        wait_until(live, timeout=30, what="sctk serve to answer /health/live")

        assert (home / "sctk.toml").is_file()
        assert all((home / name).is_dir() for name in SUBDIRS)
        engine = make_engine(config.load(home).settings)
        try:
            assert migrate.current(engine) == migrate.head()
        finally:
            engine.dispose()

        ready = httpx.get(f"{url}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] in ("OK", "WARNING")

        rid = "e2e-serve-0001"
        # any request people make is logged (answered health probes are DEBUG lines)
        tagged = httpx.get(f"{url}/api/v1/version", headers={"X-Request-ID": rid}, timeout=5)
        assert tagged.headers["x-request-id"] == rid

        log_path = home / "logs" / "sctk.log"
        entries = wait_until(
            lambda: [e for e in logged_lines(log_path) if e.get("request_id") == rid],
            timeout=10,
            what="the request in logs/sctk.log",
        )
        access = next(e for e in entries if e["logger"] == "sctk.access")
        assert (access["path"], access["status"]) == ("/api/v1/version", 401)

        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        messages = [e["message"] for e in logged_lines(log_path)]
        assert "Application shutdown complete." in messages
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        out.close()
    output = (tmp_path / "serve.out").read_text()
    assert "Traceback" not in output
    assert f"sctk serving on http://127.0.0.1:{port}" in output
