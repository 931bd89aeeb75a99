"""deploy/: the compose file and the systemd units parse, and every command they name exists."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sctk.cli.serve import ROLES
from tests.test_docs import _resolves

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
BIN = Path(sys.executable).parent


def assert_command_exists(argv: list[str]) -> None:
    program = Path(argv[0]).name
    if program == "sctk":
        assert _resolves(argv[1:]), f"sctk has no command {argv[1:3]}"
        if "--role" in argv:
            assert argv[argv.index("--role") + 1] in ROLES, argv
    elif program == "dask":
        done = subprocess.run([str(BIN / "dask"), argv[1], "--help"], capture_output=True)
        assert done.returncode == 0, f"dask has no command {argv[1]}"
    else:
        assert shutil.which(program), f"{program} is not installed"


def test_the_compose_file_has_every_part_and_its_commands_exist():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "postgres",
        "api-1",
        "api-2",
        "worker",
        "scheduler",
        "nginx",
        "dask-scheduler",
        "dask-worker",
    } <= set(services)
    for name, service in services.items():
        if "command" in service:
            assert_command_exists(service["command"])
        for path in [v.split(":")[0] for v in service.get("volumes", []) if v.startswith(".")]:
            assert (DEPLOY / path).exists(), f"{name} mounts missing {path}"
    assert (DEPLOY / compose["x-sctk"]["build"]["dockerfile"].removeprefix("deploy/")).exists()


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_each_unit_parses_and_names_a_real_command(unit, tmp_path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(unit)
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    argv = shlex.split(parser["Service"]["ExecStart"].replace("%i", "8001"))
    assert argv[0].startswith("/opt/sctk/venv/bin/")
    assert_command_exists(argv)
    # systemd's own check, with the program path pointed at this environment
    local = tmp_path / unit.name.replace("@.", "@8001.")
    local.write_text(unit.read_text().replace("/opt/sctk/venv/bin/", f"{BIN}/"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(local)], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
