"""Engines the backup commands build, each run in-process on a fresh SQLite data directory
with a little data: init, create, list, verify --read-data, prune, copy, restore --latest.

Engines are counted by wrapping `create_engine` as `sctk.storage.engine` calls it (the scratch
databases a verification reads are left out: they are other databases), so the same script
measures the tree before issue 21's backup work and after it, through the CLI alone:

    PYTHONPATH=OTHER_TREE/src python benchmarks/backup_engines.py
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# benchmarks/, beside this script: the same counting wrapper
from engines_built import _counting, built, storage_engine


def main() -> None:
    storage_engine.create_engine = _counting
    from sctk.cli import main as sctk
    from sctk.ops.init_home import init_home

    root = Path(tempfile.mkdtemp())
    home = root / "home"
    os.environ["SCTK_HOME"] = str(home)
    os.environ["SCTK_BACKUP_PASSPHRASE"] = "engines-counted-passphrase"
    init_home(home)
    (home / "data" / "notes.bin").write_bytes(os.urandom(200_000))
    commands = [
        ["backup", "init"],
        ["backup", "create", "--json"],
        ["backup", "create", "--json"],
        ["backup", "list", "--json"],
        ["backup", "verify", "--latest", "--read-data", "--json"],
        ["backup", "prune", "--keep-last", "1", "--json"],
        ["backup", "copy", "--to", str(root / "offsite"), "--json"],
        ["restore", "--latest", "--force", "--json"],
    ]
    total = 0
    for args in commands:
        before = len(built)
        with contextlib.redirect_stdout(open(os.devnull, "w")), contextlib.suppress(SystemExit):
            sctk(["--home", str(home), *args])
        made = len(built) - before
        total += made
        shown = " ".join("DIR" if a.startswith(str(root)) else a for a in args if a != "--json")
        print(f"sctk {shown}: {made} engine(s) built")
    print(f"all {len(commands)} commands: {total} engine(s) built")


if __name__ == "__main__":
    main()
