"""`sctk config set`: one setting changed in sctk.toml, validated, comments kept, audited."""

from __future__ import annotations

import pytest

from sctk import config
from sctk.errors import ConfigError
from sctk.ops.config_edit import REDACTED, parse_value, set_value
from sctk.security import audit_log
from sctk.storage.engine import make_engine, session_scope
from tests.helpers import free_port, run_sctk


def _config_events(settings):
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return [audit_log.as_dict(e) for e in audit_log.entries(s, event="config.changed")]
    finally:
        engine.dispose()


def test_a_change_is_written_with_comments_kept_and_audited(settings):
    path = settings.config_file
    change = set_value(settings, "server.port", "9001", actor="tests")
    assert (change.old, change.new) == (8000, 9001)  # the default was in force
    text = path.read_text()
    assert "# TCP port of the API." in text and "port = 9001" in text
    assert config.load(settings.home).settings.server.port == 9001
    [event] = _config_events(settings)
    assert event["target"] == "server.port" and event["details"] == {"old": 8000, "new": 9001}

    set_value(settings, "server.port", "9002", actor="tests")
    assert config.load(settings.home).settings.server.port == 9002
    assert _config_events(settings)[0]["details"] == {"old": 9001, "new": 9002}


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("server.port", "not-a-port", "server.port"),
        ("server.port", "70000", "less than or equal to 65535"),
        ("server.nope", "1", "Unknown setting 'server.nope'"),
        ("server", "1", "not a single setting"),
        ("home", "/elsewhere", "Unknown setting 'home'"),
        ("health.disk_critical_free_percent", "50", "lower than disk_warning_free_percent"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(settings, key, value, fragment):
    before = settings.config_file.read_bytes()
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        set_value(settings, key, value, actor="tests")
    assert settings.config_file.read_bytes() == before
    assert _config_events(settings) == []


def test_secrets_never_reach_the_audit_log_or_the_output(settings, tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    change = set_value(settings, "database_url", url, actor="tests")
    assert change.new == REDACTED
    [event] = _config_events(settings)
    assert url not in str(event) and event["details"]["new"] == REDACTED


@pytest.mark.parametrize(
    ("raw", "value"),
    [("9000", 9000), ("true", True), ("1.5", 1.5), ('"quoted"', "quoted"), ("0.0.0.0", "0.0.0.0")],
)
def test_values_are_read_as_toml_literals_or_text(raw, value):
    assert parse_value(raw) == value


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_sets_and_refuses(home):
    ok = run_sctk("config", "set", "log.level", "DEBUG", home=home)
    assert ok.returncode == 0, ok.stderr
    assert "log.level" in ok.stdout and "DEBUG" in ok.stdout
    before = (home / "sctk.toml").read_bytes()
    bad = run_sctk("config", "set", "log.level", "LOUD", home=home)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("Error: Not changed: 'log.level'")
    # the audit entry cannot be stored: the file is left as it was, and one sentence says why
    port = free_port()
    down = run_sctk(
        "config",
        "set",
        "log.level",
        "ERROR",
        home=home,
        env={"SCTK_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{port}/x"},
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert f"127.0.0.1:{port}" in down.stderr or f"port {port}" in down.stderr
    assert (home / "sctk.toml").read_bytes() == before
