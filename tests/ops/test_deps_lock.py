"""The saved package sets of `sctk deps upgrade` and its check of installed requirements,
on this interpreter's real metadata (the upgrade itself: test_deps_upgrade.py)."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata

from sctk import config
from sctk.ops import dependency_upgrade


def test_lock_files_hold_the_exact_set_and_only_the_newest_are_kept(tmp_path):
    settings = config.load(tmp_path).settings  # lock files need the directory, no database
    have = {"numpy": metadata.version("numpy"), "torch": metadata.version("torch")}
    stamps = [f"20261205T0000{i:02d}000000Z" for i in range(7)]
    for stamp in stamps:
        path = dependency_upgrade.save_lock(settings, have, stamp)
        (path.parent / f"wheels-{stamp}").mkdir()  # the saved wheels of that run
    assert dependency_upgrade.read_lock(path) == have
    saved = json.loads(path.read_text())["packages"]
    record = metadata.distribution("numpy").read_text("RECORD")
    assert saved[0]["name"] == "numpy" and len(saved[0]["record_sha256"]) == 64
    assert saved[0]["record_sha256"] == hashlib.sha256(record.encode()).hexdigest()
    assert path.with_suffix(".txt").read_text() == "".join(f"{n}=={v}\n" for n, v in have.items())

    gone = dependency_upgrade.prune_locks(settings)
    assert [p.name for p in gone] == [f"lock-{s}.json" for s in stamps[:2]]
    left = sorted(p.name for p in dependency_upgrade.lock_dir(settings).iterdir())
    assert left == sorted(
        name for s in stamps[2:] for name in (f"lock-{s}.json", f"lock-{s}.txt", f"wheels-{s}")
    )


def test_a_broken_pin_among_the_installed_packages_is_found(tmp_path, monkeypatch):
    before = dependency_upgrade.broken_requirements()
    # an installed package (its dist-info as pip lays it out) that pins numpy below 1
    info = tmp_path / "pinned_pkg-1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: pinned-pkg\nVersion: 1.0\nRequires-Dist: numpy<1\n"
        "Requires-Dist: not-installed-anywhere>=2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = dependency_upgrade.broken_requirements() - before
    assert found == {
        f"pinned-pkg 1.0 requires numpy<1, but numpy {metadata.version('numpy')} is installed",
        "pinned-pkg 1.0 requires not-installed-anywhere>=2, which is not installed",
    }
