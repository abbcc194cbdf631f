"""SQLite schema migrations upgrade an existing database in place, keeping its rows."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from keyless.storage.base import AuditEntry, AuditQuery
from keyless.storage.sqlite import MIGRATIONS, SqliteStore


def test_upgrade_from_first_schema_keeps_accounts(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO service_accounts (unique_id, project_id, account_id, email, created_at) "
               "VALUES ('1', 'p', 'old-sa', 'old-sa@p.iam.gserviceaccount.com', 1.0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    store = SqliteStore(path)
    asyncio.run(store.open())
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        account = asyncio.run(store.find_service_account("old-sa@p.iam.gserviceaccount.com"))
        assert account is not None and account.tokens_valid_after == 0.0
    finally:
        asyncio.run(store.close())


def test_upgrade_keeps_the_audit_log_and_its_order(tmp_path: Path) -> None:
    """Migration 6 copies the audit log into a table without AUTOINCREMENT: same rows, same seq, and new
    entries still come after every old one."""
    path = tmp_path / "audit.db"
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:5]:
        db.executescript(migration)
    rows = [(seq, f"id-{seq}", float(seq), "GenerateAccessToken", "a@x", "r", 0, f'{{"n": {seq}}}')
            for seq in (3, 7, 8)]
    db.executemany("INSERT INTO audit_log (seq, insert_id, timestamp, method, principal, resource, denied, body) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("PRAGMA user_version=5")
    db.commit()
    db.close()

    async def upgrade_and_append() -> list[AuditEntry]:
        store = SqliteStore(path)
        await store.open()
        try:
            await store.append_audit([AuditEntry("id-new", 9.0, "SignBlob", "a@x", "r", False, {"n": 9})])
            schema = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_log'").fetchone()[0]
            assert "AUTOINCREMENT" not in schema.upper()
            assert store.db.execute("SELECT count(*) FROM sqlite_sequence WHERE name = 'audit_log'"
                                    ).fetchone()[0] == 0
            return await store.query_audit(AuditQuery())
        finally:
            await store.close()

    entries = asyncio.run(upgrade_and_append())
    assert [(e.seq, e.insert_id, e.body["n"]) for e in entries] == [
        (3, "id-3", 3), (7, "id-7", 7), (8, "id-8", 8), (9, "id-new", 9)]


def test_upgrade_keeps_the_apis_of_existing_projects_enabled(tmp_path: Path) -> None:
    """Migration 7 records, for each project made before, the APIs keyless served it: `keyless serve
    --enforce-services` then refuses nothing the project used."""
    path = tmp_path / "services.db"
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:6]:
        db.executescript(migration)
    db.execute("INSERT INTO projects (project_id, number, created_at) VALUES ('old-project', '123', 1.0)")
    db.execute("PRAGMA user_version=6")
    db.commit()
    db.close()

    store = SqliteStore(path)
    asyncio.run(store.open())
    try:
        enabled = asyncio.run(store.list_enabled_services("old-project"))
    finally:
        asyncio.run(store.close())
    for service in ("iam.googleapis.com", "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com",
                    "orgpolicy.googleapis.com", "serviceusage.googleapis.com", "storage.googleapis.com"):
        assert service in enabled
