"""Dependency report: installed packages against the newest the package index offers, and
known advisories where pip-audit is installed. pip does the talking, with the index the
machine is configured for; when it cannot be reached the report says so plainly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from packaging.requirements import Requirement

TIMEOUT = 120.0


@dataclass
class DepsReport:
    reachable: bool
    installed: dict[str, str]
    outdated: list[dict[str, str]] = field(default_factory=list)
    advisories: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # what `sctk deps upgrade` would take, and what sctk's ranges or other packages' pins
    # hold back from the newest version
    upgrades: list[dict[str, str]] = field(default_factory=list)
    held: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sctk_dependencies() -> dict[str, str]:
    """sctk's direct requirements that are installed, with their versions."""
    out = {}
    for line in metadata.requires("sctk") or []:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        try:
            out[req.name.lower()] = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
    return dict(sorted(out.items()))


def upgrade_outlook(rows: list[dict[str, str]]) -> tuple[list[dict], list[dict]]:
    """From `pip list --outdated` ROWS: the newest versions `deps upgrade` would take (within
    sctk's ranges and every installed package's pins), and those held back, with why. A
    package whose newest version is held back may still have a newer one within its range;
    `sctk deps upgrade --dry-run` asks pip's resolver for it."""
    from packaging.utils import canonicalize_name

    from sctk.ops import dependency_upgrade

    have = {
        canonicalize_name(d.metadata["Name"] or ""): d.version for d in metadata.distributions()
    }
    latest = {canonicalize_name(r["name"]): r["latest_version"] for r in rows}
    allowed, held = dependency_upgrade.classify(have, latest, dependency_upgrade.candidates(have))
    blocked = {h.name for h in held}
    upgrades = [
        {"name": n, "installed": have[n], "to": latest[n]}
        for n in sorted(allowed)
        if n not in blocked
    ]
    return upgrades, [asdict(h) for h in held]


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def check(say: Callable[[str], None] | None = None) -> DepsReport:
    """The report; SAY(sentence) is told each step first, as each may take a minute."""
    say = say or (lambda _line: None)
    installed = sctk_dependencies()
    report = DepsReport(reachable=True, installed=installed)
    say(
        f"asking the package index for the newest versions of sctk's {len(installed)} "
        "dependencies (pip index, pip list --outdated)..."
    )
    try:
        # `pip list --outdated` answers an empty list when the index is down: ask the index
        # for one package first to tell "nothing outdated" from "could not look"
        probe = _pip("index", "versions", "packaging")
        done = _pip("list", "--outdated", "--format=json") if probe.returncode == 0 else None
        rows = json.loads(done.stdout) if done is not None and done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        rows = None
    if rows is None:
        report.reachable = False
        report.notes.append("could not reach the package index; versions were not compared")
        return report
    report.outdated = [
        {"name": r["name"], "installed": r["version"], "latest": r["latest_version"]}
        for r in rows
        if r["name"].lower() in installed
    ]
    report.upgrades, report.held = upgrade_outlook(rows)
    if shutil.which("pip-audit") is None:
        report.notes.append(
            "advisories not checked: pip-audit is not installed (pip install pip-audit)"
        )
        return report
    say("looking up known advisories with pip-audit...")
    try:
        done = subprocess.run(
            ["pip-audit", "--format=json", "--progress-spinner=off"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        data = json.loads(done.stdout or "{}")
        for dep in data.get("dependencies", []):
            for vuln in dep.get("vulns", []):
                report.advisories.append(
                    {
                        "name": dep["name"],
                        "version": dep["version"],
                        "id": vuln.get("id"),
                        "fix": vuln.get("fix_versions"),
                    }
                )
    except (subprocess.TimeoutExpired, ValueError):
        report.notes.append("advisories not checked: pip-audit could not reach its service")
    return report
