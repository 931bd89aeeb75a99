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


def _register_test_physics() -> None:
    """The tests' own physics functions, registered as a user's own Python code would (a
    string names a physics only through sctk.uq.physics_registry)."""
    from sctk.uq import physics_registry
    from tests.uq import physics_examples

    for name in ("sine_of_first", "wrong_length", "small_flow"):
        physics_registry.register(
            f"tests.uq.physics_examples:{name}", getattr(physics_examples, name)
        )


_register_test_physics()
