"""The compliance audit (`sctk audit`) and the access review (`sctk users review`)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from sctk.ops import access_review, compliance
from sctk.security import tokens, users
from sctk.storage.engine import session_scope
from sctk.storage.models import LoginAttempt, User
from tests.helpers import run_sctk
from tests.security.conftest import sqlite_only

PASSPHRASE = {"SCTK_BACKUP_PASSPHRASE": "correct horse battery staple 42"}


def failing(report) -> dict[str, str]:
    return {c.name: c.fix for c in report.checks if c.status == "fail"}


def test_a_fresh_install_scores_below_100_and_the_named_fixes_bring_it_to_100(tmp_path):
    home = tmp_path / "fresh"
    assert run_sctk("init", home=home).returncode == 0
    r = run_sctk("audit", "--format", "json", "--min-score", "100", home=home)
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["score"] < 100
    fixes = {c["name"]: c["fix"] for c in report["checks"] if c["status"] == "fail"}
    assert set(fixes) == {
        "daily backups",
        "verified backup",
        "first admin password changed",
        "log retention",
    }
    assert list(home.glob("reports/audit-*.json"))

    password_file = home / "tmp" / "new-admin-password"
    password_file.parent.mkdir(exist_ok=True)
    password_file.write_text("a much better passphrase 7\n")
    # run each named fix as the report words it
    commands = [
        ["users", "reset-password", "admin", "--password-file", str(password_file)],
        fixes["log retention"].split()[1:],
        ["backup", "init"],
        ["backup", "create", "--label", "daily"],
        fixes["verified backup"].split()[1:],
    ]
    assert fixes["daily backups"].startswith("sctk backup init && sctk backup create --label daily")
    for command in commands:
        done = run_sctk(*command, home=home, env=PASSPHRASE)
        assert done.returncode == 0, (command, done.stdout, done.stderr)

    r = run_sctk("audit", "--min-score", "100", "--format", "json", home=home)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["score"] == 100
    history = json.loads(run_sctk("audit", "--history", "--format", "json", home=home).stdout)
    assert [h["score"] for h in history][:2] == [100, report["score"]]


def test_the_access_review_names_each_finding_with_its_fix(settings, engine):
    with session_scope(engine) as s:
        users.create(s, "olga", "long enough password 1", "analyst")
        users.create(s, "locked", "long enough password 2", "viewer")
        long_ago = datetime.now(UTC) - timedelta(days=400)
        s.execute(
            update(User)
            .where(User.username == "olga")
            .values(last_login_at=long_ago, password_changed_at=long_ago, created_at=long_ago)
        )
        s.execute(
            update(User)
            .where(User.username == "locked")
            .values(locked_until=datetime.now(UTC) + timedelta(hours=1))
        )
        olga = s.query(User).filter_by(username="olga").one()
        tokens.create(s, olga, "ci", None, actor="test")
        s.add_all([LoginAttempt(username="mallory", success=False) for _ in range(3)])
    os.chmod(settings.home / "sctk.toml", 0o644)

    with session_scope(engine) as s:
        items = access_review.review(settings, s)
    found = {(i.kind, i.subject): i.fix for i in items}
    assert found[("dormant", "olga")] == "sctk users disable olga"
    assert found[("old_password", "olga")] == "sctk users reset-password olga"
    assert found[("locked", "locked")] == "sctk users unlock locked"
    assert found[("token_no_expiry", "olga/ci")].startswith("sctk tokens revoke ")
    assert found[("failed_logins", "mallory")].startswith("sctk audit-log list")
    assert found[("file_mode", str(settings.home / "sctk.toml"))] == (
        f"chmod 600 {settings.home / 'sctk.toml'}"
    )
    assert ("dormant", "admin") not in found  # created just now

    report = compliance.run_audit(settings)
    assert "dormant accounts" in failing(report) and "tokens without expiry" in failing(report)


@sqlite_only
def test_audit_refuses_bad_input(settings):
    r = run_sctk("audit", "--min-score", "101", home=settings.home)
    assert r.returncode != 0 and "--min-score must lie between 0 and 100; got 101." in r.stderr
    r = run_sctk("audit", "--format", "pdf", home=settings.home)
    assert r.returncode != 0
    assert "Unknown format 'pdf'; use one of table, json, md, html." in r.stderr
    assert not list(settings.home.glob("reports/audit-*"))


def test_markdown_and_html_reports_carry_every_check(settings):
    report = compliance.run_audit(settings)
    md, page = compliance.render(report, "md"), compliance.render(report, "html")
    for check in report.checks:
        assert check.name in md and check.name in page
    assert f"Score: **{report.score:g} / 100**" in md and "<table>" in page
