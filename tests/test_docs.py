"""The documentation cannot go stale: generated references match the code, every relative
link resolves, and every `sctk ...` command the prose names exists."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer

from sctk import docs_build

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
COMMAND = re.compile(r"`(sctk [^`]+)`")


def test_generated_references_are_current():
    stale = docs_build.stale(ROOT / "docs")
    assert not stale, f"run 'sctk docs build': stale {stale}"


def test_the_api_reference_names_who_may_call_each_route():
    from sctk.security.roles import Role, allowed

    lines = [
        line
        for line in (ROOT / "docs" / "api.md").read_text().splitlines()
        if line.startswith("- `")
    ]
    assert len(lines) > 40
    access = {line.split("`")[1]: line.rpartition("(")[2].rstrip(")") for line in lines}
    assert all(
        a.startswith("needs `") or a in ("no sign-in", "any signed-in user")
        for a in access.values()
    )
    assert access["POST /api/v1/auth/token"] == "no sign-in"
    assert access["GET /api/v1/me"] == "any signed-in user"
    # the permission named is the one the route enforces: a viewer may not take a backup
    needed = access["POST /api/v1/backups"].split("`")[1]
    assert needed == "backups.manage"
    assert not allowed("viewer", needed) and allowed(Role.admin, needed)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _root_command() -> click.Command:
    from sctk.cli import app

    return typer.main.get_command(app)


def _resolves(words: list[str], command: click.Command | None = None) -> bool:
    """Whether sctk WORDS names a command (options and arguments after it are ignored);
    a word 'a|b|c' (a table's list of sub-commands) must name a command for each."""
    command = command or _root_command()
    ctx = click.Context(command)
    for i, word in enumerate(words):
        # typer carries its own copy of click: a group is what has sub-commands
        if not hasattr(command, "get_command") or word.startswith(("-", "[", "<")):
            return True
        alternatives = word.replace("\\|", "|").split("|")
        if len(alternatives) > 1:
            return all(_resolves([alt, *words[i + 1 :]], command) for alt in alternatives)
        sub = command.get_command(ctx, word)
        if sub is None:
            return False
        command = sub
    return True


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_named_command_exists(page):
    missing = []
    for text in COMMAND.findall(page.read_text(encoding="utf-8")):
        words = text.split()[1:]
        if not _resolves(words):
            missing.append(text)
    assert not missing, f"{page.name} names commands sctk does not have: {missing}"
