"""SQLite schema migrations upgrade an existing database in place, keeping its rows."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

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
