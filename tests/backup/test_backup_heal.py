"""Damage and garbage as an operator meets them on the command line: `backup list` names a
damaged snapshot file, `backup repair` rebuilds a damaged index, `backup verify` reports
unreferenced bytes, `restore --target` restores every intact file and names the damaged one,
and the passphrase rules (12 characters at least, argon2id, older scrypt keys still open)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sctk.backup import create
from sctk.backup.location import init_repo, open_repo
from sctk.backup.repo import Repository, crypto
from sctk.ops.init_home import init_home
from sctk.runtime import Runtime
from tests.backup.backup_support import ENV, PASSPHRASE, set_passphrase
from tests.backup.repo.conftest import damage_chunk
from tests.helpers import run_sctk
from tests.security.conftest import assert_cli_error


def _write_data(home: Path) -> dict[str, bytes]:
    files = {f"data/raw/f{i}.bin": os.urandom(60_000 + i) for i in range(4)}
    for rel, data in files.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(data)
    return files


@pytest.fixture
def backed_up(tmp_path, monkeypatch):
    """A SQLite data directory with data files and one snapshot: (home, repo, info, files)."""
    set_passphrase(monkeypatch)
    home, settings = tmp_path / "home", init_home(tmp_path / "home")[1]
    with Runtime(settings) as runtime:
        files = _write_data(home)
        repo = init_repo(settings)
        info = create.take(runtime, repo, "manual")
        return home, repo, info, files


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))


def test_list_names_a_damaged_snapshot_file_and_restore_says_why(backed_up):
    home, repo, info, _ = backed_up
    _flip(Path(repo.url, "snapshots", info.id), -40)  # in the header a listing reads
    done = run_sctk("backup", "list", home=home, env=ENV)
    assert done.returncode == 1, done.stdout
    assert f"Snapshot {info.id[:12]} cannot be read" in done.stderr
    assert "1 snapshot file(s) are damaged" in done.stderr and "Traceback" not in done.stderr
    as_json = run_sctk("backup", "list", "--json", home=home, env=ENV)
    assert as_json.returncode == 1 and json.loads(as_json.stdout) == []
    assert info.id[:12] in as_json.stderr
    refused = run_sctk("restore", "--latest", home=home, env=ENV)
    assert_cli_error(refused, f"snapshots/{info.id}")
    assert "no snapshots yet" not in refused.stderr


def test_repair_after_a_flipped_index_byte_then_verify_and_restore(backed_up, tmp_path):
    home, repo, info, files = backed_up
    [index] = repo.backend.list("index")
    _flip(Path(repo.url, index), 50)
    broken = run_sctk("backup", "verify", home=home, env=ENV)
    assert broken.returncode == 1 and index in broken.stderr
    done = run_sctk("backup", "repair", home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())  # the console wraps long lines
    assert "Rebuilt the index" in said and "Every snapshot can be restored" in said
    verified = run_sctk("backup", "verify", "--read-data", home=home, env=ENV)
    assert verified.returncode == 0, verified.stderr
    assert "no errors" in verified.stdout
    out = tmp_path / "out"
    restored = run_sctk("restore", info.id[:12], "--target", str(out), home=home, env=ENV)
    assert restored.returncode == 0, restored.stderr
    assert {rel: (out / rel).read_bytes() for rel in files} == files


def test_repair_names_what_no_snapshot_can_restore(backed_up):
    home, repo, info, _ = backed_up
    entry = next(e for e in repo.files(info.id) if e.path == "data/raw/f2.bin")
    damage_chunk(repo, entry.chunks[0])
    done = run_sctk("backup", "repair", "--read-data", "--json", home=home, env=ENV)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["dropped_chunks"] == 1
    assert [d["path"] for d in report["lost"]] == ["data/raw/f2.bin"]
    assert "1 file version(s) no snapshot can restore" in report["message"]


def test_damage_heals_with_the_next_backup(backed_up):
    home, repo, info, _ = backed_up
    entry = next(e for e in repo.files(info.id) if e.path == "data/raw/f1.bin")
    damage_chunk(repo, entry.chunks[0])
    found = run_sctk("backup", "verify", "--read-data", home=home, env=ENV)
    assert found.returncode == 1 and "data/raw/f1.bin" in found.stdout + found.stderr
    made = run_sctk("backup", "create", "--json", home=home, env=ENV)
    assert made.returncode == 0, made.stderr
    new_id = json.loads(made.stdout)["id"]
    again = run_sctk("backup", "verify", new_id[:12], "--read-data", home=home, env=ENV)
    assert again.returncode == 0, again.stdout + again.stderr


def test_verify_reports_unreferenced_bytes(backed_up):
    home, repo, info, _ = backed_up
    (home / "data" / "raw" / "f0.bin").write_bytes(os.urandom(200_000))
    made = run_sctk("backup", "create", home=home, env=ENV)
    assert made.returncode == 0, made.stderr
    Repository.open(repo.url, PASSPHRASE).forget([info.id])
    done = run_sctk("backup", "verify", "--json", home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["check"]["unreferenced_bytes"] >= 60_000
    assert "referenced by no snapshot" in result["message"]
    assert "sctk backup prune" in result["message"]


def test_restore_into_a_fresh_target_restores_what_is_intact(backed_up, tmp_path):
    home, repo, info, files = backed_up
    entry = next(e for e in repo.files(info.id) if e.path == "data/raw/f3.bin")
    damage_chunk(repo, entry.chunks[0])
    out = tmp_path / "fresh"
    done = run_sctk("restore", info.id[:12], "--target", str(out), home=home, env=ENV)
    assert done.returncode == 1, done.stdout
    assert "1 damaged file(s)" in done.stderr and "data/raw/f3.bin" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (out / "data/raw/f3.bin").exists()
    assert {r: (out / r).read_bytes() for r in files if r != "data/raw/f3.bin"} == {
        r: d for r, d in files.items() if r != "data/raw/f3.bin"
    }
    assert (out / "sctk.db").is_file() and not (out / "tmp" / "restore").exists()
    # in place: all or nothing, the data directory untouched
    before = (home / "data/raw/f0.bin").read_bytes()
    (home / "data/raw/f3.bin").write_bytes(b"newer")
    in_place = run_sctk("restore", info.id[:12], home=home, env=ENV)
    assert in_place.returncode != 0 and "nothing was restored" in in_place.stderr
    assert (home / "data/raw/f3.bin").read_bytes() == b"newer"
    assert (home / "data/raw/f0.bin").read_bytes() == before


def test_short_passphrase_refused_at_init_and_change(tmp_path):
    home = tmp_path / "home"
    init_home(home)
    short = {"SCTK_BACKUP_PASSPHRASE": "eleven-char"}
    refused = run_sctk("backup", "init", home=home, env=short)
    assert_cli_error(refused, "has 11 characters; use at least 12")
    assert not (home / "backups").exists() or not any((home / "backups").iterdir())

    assert run_sctk("backup", "init", home=home, env=ENV).returncode == 0
    config = json.loads((home / "backups" / "config").read_text())
    assert config["kdf"]["name"] == "argon2id" and config["kdf"]["m"] >= 19 * 1024
    new_file = tmp_path / "new-passphrase"
    new_file.write_text("tiny\n")
    refused = run_sctk("backup", "passphrase", "--new-from", str(new_file), home=home, env=ENV)
    assert_cli_error(refused, "use at least 12")
    new_file.write_text("a much longer new passphrase\n")
    done = run_sctk("backup", "passphrase", "--new-from", str(new_file), home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    assert_cli_error(run_sctk("backup", "list", home=home, env=ENV), "Wrong passphrase")
    new_env = {"SCTK_BACKUP_PASSPHRASE": "a much longer new passphrase"}
    assert run_sctk("backup", "list", home=home, env=new_env).returncode == 0


def test_a_repository_keyed_with_scrypt_still_opens(tmp_path, monkeypatch):
    """Repositories made before argon2id (their KDF parameters in the config) still open,
    back up and restore; changing the passphrase moves them to argon2id."""
    url = str(tmp_path / "old")
    repo = Repository.init(url, PASSPHRASE)
    kdf = {"name": "scrypt", "n": 2**14, "r": 8, "p": 1, "salt": crypto.b64(os.urandom(16))}
    config = json.loads(Path(url, "config").read_text())
    config["kdf"] = kdf
    config["key"] = crypto.wrap_master(repo.keys.master, PASSPHRASE, kdf, config["id"])
    Path(url, "config").write_text(json.dumps(config))
    old = Repository.open(url, PASSPHRASE)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("kept across the KDF change\n")
    with old.writer() as w:
        w.add_tree(src)
        info = w.commit("manual", {})
    old.change_passphrase(PASSPHRASE)
    assert json.loads(Path(url, "config").read_text())["kdf"]["name"] == "argon2id"
    monkeypatch.setenv("SCTK_BACKUP_PASSPHRASE", PASSPHRASE)
    settings = init_home(tmp_path / "home")[1]
    again = open_repo(settings, url)
    assert b"".join(again.read_file(info.id, "a.txt")) == b"kept across the KDF change\n"
