"""Layered settings: precedence and origins, redaction, and errors that name their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from sctk import config
from sctk.errors import ConfigError


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / config.CONFIG_FILE_NAME
    path.write_text(text, encoding="utf-8")
    return path


def config_error(home: Path, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(home, overrides)
    message = info.value.message
    assert "\n" not in message, f"expected one sentence, got: {message!r}"
    assert "Traceback" not in message
    return message


def test_defaults_without_file_or_environment(tmp_path):
    loaded = config.load(tmp_path / "home")
    s = loaded.settings
    assert s.home == tmp_path / "home"
    assert s.server.port == 8000
    assert s.log.level == "INFO"
    assert s.db_url == f"sqlite:///{tmp_path / 'home' / 'sctk.db'}"
    assert s.is_sqlite
    assert loaded.origins["home"] == "command line"
    others = {k: v for k, v in loaded.origins.items() if k != "home"}
    assert "server.port" in others
    assert set(others.values()) == {"default"}


def test_precedence_default_file_env_overrides(tmp_path, monkeypatch):
    home = tmp_path / "home"
    path = write_config(
        home,
        "[server]\n"
        'host = "10.1.2.3"\n'
        "port = 8001\n"
        "workers = 3\n"
        "[log]\n"
        'level = "DEBUG"\n'
        "backup_count = 7\n",
    )
    monkeypatch.setenv("SCTK_SERVER__PORT", "8002")
    monkeypatch.setenv("SCTK_SERVER__WORKERS", "4")
    monkeypatch.setenv("SCTK_LOG__LEVEL", "WARNING")

    loaded = config.load(home, {"server": {"port": 8003}, "database_url": None})
    s, origins = loaded.settings, loaded.origins

    assert s.server.port == 8003  # overrides beat the environment and the file
    assert origins["server.port"] == "command line"
    assert s.server.workers == 4  # the environment beats the file
    assert origins["server.workers"] == "SCTK_SERVER__WORKERS"
    assert s.log.level == "WARNING"
    assert origins["log.level"] == "SCTK_LOG__LEVEL"
    assert s.server.host == "10.1.2.3"  # the file beats the default
    assert origins["server.host"] == str(path)
    assert s.log.backup_count == 7
    assert origins["log.backup_count"] == str(path)
    assert s.log.max_bytes == 10 * 1024 * 1024  # nobody set it
    assert origins["log.max_bytes"] == "default"
    # an override of None means "flag not given": it neither wins nor claims the origin
    assert s.database_url is None
    assert origins["database_url"] == "default"


def test_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCTK_HOME", str(tmp_path / "elsewhere"))
    loaded = config.load()
    assert loaded.settings.home == tmp_path / "elsewhere"
    assert loaded.origins["home"] == "SCTK_HOME"


@pytest.mark.parametrize("source", ["overrides", "file", "env"])
def test_database_url_password_is_redacted(tmp_path, monkeypatch, source):
    home = tmp_path / "home"
    url = "postgresql://alice:s3cr3t-pw@db.example.org:6543/sctk"
    overrides = None
    if source == "overrides":
        overrides = {"database_url": url}
    elif source == "file":
        write_config(home, f'database_url = "{url}"\n')
    else:
        monkeypatch.setenv("SCTK_DATABASE_URL", url)

    loaded = config.load(home, overrides)
    assert loaded.settings.db_url == url
    rows = {key: (value, origin) for key, value, origin in config.redacted(loaded)}
    shown, origin = rows["database_url"]
    assert shown == "postgresql://alice:***@db.example.org:6543/sctk"
    assert "s3cr3t-pw" not in repr(rows)
    assert "s3cr3t-pw" not in repr(loaded.settings)
    expected_origin = {
        "overrides": "command line",
        "file": str(home / config.CONFIG_FILE_NAME),
        "env": "SCTK_DATABASE_URL",
    }[source]
    assert origin == expected_origin


def test_redacted_lists_every_setting_with_its_origin(tmp_path):
    loaded = config.load(tmp_path / "home", {"server": {"port": 9001}})
    rows = {key: (value, origin) for key, value, origin in config.redacted(loaded)}
    assert rows["server.port"] == ("9001", "command line")
    assert rows["server.host"] == ("127.0.0.1", "default")
    assert rows["database_url"] == (f"sqlite:///{tmp_path / 'home' / 'sctk.db'}", "default")
    assert set(rows) == set(loaded.origins)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    home = tmp_path / "home"
    path = write_config(home, '[server]\nport = = 8001\nhost = "x"\n')
    message = config_error(home)
    assert str(path) in message
    assert "line 2" in message


def test_unknown_key_is_named_with_close_match(tmp_path):
    home = tmp_path / "home"
    path = write_config(home, "[server]\nprot = 8001\n")
    message = config_error(home)
    assert "server.prot" in message
    assert "did you mean 'port'" in message
    assert str(path) in message


def test_unknown_key_without_close_match_lists_known_keys(tmp_path):
    home = tmp_path / "home"
    write_config(home, "[log]\nzzz = 1\n")
    message = config_error(home)
    assert "log.zzz" in message
    assert "level, max_bytes, backup_count" in message


def test_wrong_type_names_field_and_file(tmp_path):
    home = tmp_path / "home"
    path = write_config(home, '[server]\nport = "eighty"\n')
    message = config_error(home)
    assert "'server.port'" in message
    assert str(path) in message
    assert "'eighty'" in message


def test_out_of_range_override_names_command_line(tmp_path):
    message = config_error(tmp_path / "home", {"server": {"port": 70000}})
    assert "'server.port'" in message
    assert "command line" in message


def test_bad_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SCTK_SERVER__PORT", "not-a-port")
    message = config_error(tmp_path / "home")
    assert "SCTK_SERVER__PORT" in message
    assert "server.port" in message


def test_unknown_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SCTK_LOG__LEVL", "DEBUG")
    message = config_error(tmp_path / "home")
    assert "SCTK_LOG__LEVL" in message
    assert "did you mean 'level'" in message


def test_health_thresholds_out_of_order(tmp_path):
    home = tmp_path / "home"
    path = write_config(
        home, "[health]\ndisk_warning_free_percent = 5.0\ndisk_critical_free_percent = 10.0\n"
    )
    message = config_error(home)
    assert "disk_critical_free_percent must be lower than disk_warning_free_percent" in message
    assert str(path) in message and "SCTK_" not in message


def test_a_section_error_names_every_source_of_its_values(tmp_path, monkeypatch):
    home = tmp_path / "home"
    path = write_config(home, "[health]\ndisk_warning_free_percent = 5.0\n")
    monkeypatch.setenv("SCTK_HEALTH__DISK_CRITICAL_FREE_PERCENT", "10.0")
    message = config_error(home)
    assert "disk_critical_free_percent must be lower than disk_warning_free_percent" in message
    assert f"(from {path} and SCTK_HEALTH__DISK_CRITICAL_FREE_PERCENT)" in message


def test_check_file_reports_every_bad_field(tmp_path):
    path = write_config(
        tmp_path / "home",
        '[server]\nport = "x"\nworkers = 0\n[log]\nlevel = "LOUD"\n[health]\nfoo = 1\n',
    )
    problems = config.check_file(path)
    assert len(problems) == 4, problems
    by_field = {
        field: [p for p in problems if field in p]
        for field in ("server.port", "server.workers", "log.level", "health.foo")
    }
    assert all(len(found) == 1 for found in by_field.values()), by_field
    assert "'LOUD'" in by_field["log.level"][0]
    assert "unknown setting" in by_field["health.foo"][0]


def test_check_file_valid_and_missing(tmp_path):
    path = write_config(tmp_path / "home", "[server]\nport = 8123\n")
    assert config.check_file(path) == []
    missing = config.check_file(tmp_path / "nope" / "sctk.toml")
    assert len(missing) == 1
    assert "does not exist" in missing[0]


def test_check_file_syntax_error_is_one_problem(tmp_path):
    path = write_config(tmp_path / "home", "[server\n")
    problems = config.check_file(path)
    assert len(problems) == 1
    assert "line 1" in problems[0]


def test_home_in_file_is_refused(tmp_path):
    home = tmp_path / "home"
    path = write_config(home, f'home = "{tmp_path / "other"}"\n')
    message = config_error(home)
    assert "'home'" in message
    assert "--home or SCTK_HOME" in message
    problems = config.check_file(path)
    assert len(problems) == 1
    assert "'home'" in problems[0]


def test_domain_sections_come_from_their_domain_in_a_fresh_process(tmp_path):
    # [alerts] and [anomaly] are declared by monitoring, not imported by config: a process
    # that imports nothing but config still reads them from the file and the environment,
    # and refuses a bad value with the sentence naming its origin (warnings are errors here:
    # a section read before its model is known would warn and split env keys wrongly)
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    write_config(home, "[alerts]\ncooldown_seconds = 42\n")
    script = (
        "import sys\n"
        "from sctk import config\n"
        "assert 'sctk.monitoring.rules' not in sys.modules\n"
        "s = config.load(sys.argv[1]).settings\n"
        "print(type(s.alerts).__module__, s.alerts.cooldown_seconds, s.anomaly.detector)\n"
        "try:\n"
        "    config.load(sys.argv[1], {'anomaly': {'detector': 'nope'}})\n"
        "except config.ConfigError as exc:\n"
        "    print(exc.message)\n"
    )
    env = {**os.environ, "SCTK_ANOMALY__DETECTOR": "three_sigma"}
    env.pop("SCTK_HOME", None)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, str(home)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "sctk.monitoring.rules 42.0 three_sigma"
    assert second == (
        "Invalid settings: 'anomaly' (from command line): Unknown anomaly detector 'nope'; "
        "choose one of: adaptive, robust, three_sigma."
    )


def test_a_section_config_does_not_name_is_refused():
    from pydantic import BaseModel

    with pytest.raises(ValueError, match="settings section 'weather'"):
        config.settings_section("weather")(type("Weather", (BaseModel,), {}))
