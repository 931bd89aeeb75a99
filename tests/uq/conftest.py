"""Fixtures of the UQ tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def sctk_here(monkeypatch, capsys):
    """Run the CLI's entry point in this process (no torch import per call)."""
    from sctk.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, home) -> Ran:
        monkeypatch.setenv("SCTK_HOME", str(home))
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run
