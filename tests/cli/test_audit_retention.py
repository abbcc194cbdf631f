"""``keyless serve --audit-retention-days``: a real server deletes the entries older than the retention; the
embedded store keeps 30 days unless told otherwise, and a PostgreSQL broker must be told."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from keyless.storage.base import AuditEntry
from keyless.storage.sqlite import SqliteStore
from tests.conftest import KEYLESS, Server, start_server

# About 0.4 s: the first server's entries are older than that by the time the second one has started.
RETENTION_DAYS = "0.000005"


def _entry_ids(server: Server) -> list[str]:
    return [e["insertId"] for e in server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]]


def test_a_server_with_a_retention_deletes_older_entries(tmp_path: Path) -> None:
    first = start_server(tmp_path / "data")
    try:
        email = first.create_sa("retention-target")
        for _ in range(3):  # the owner may not mint for it: three refusals, three entries
            first.owner("POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                        {"scope": ["https://www.googleapis.com/auth/cloud-platform"]}, expect=403)
        old = _entry_ids(first)
    finally:
        first.stop()
    assert len(old) >= 4

    second = start_server(tmp_path / "data", "--audit-retention-days", RETENTION_DAYS)
    try:
        deadline = time.monotonic() + 30
        # Pruning starts once the server is up; the newest entry is always kept.
        while len(set(old) & set(_entry_ids(second))) > 1:
            assert time.monotonic() < deadline, "old audit entries were not deleted"
            time.sleep(0.05)
        assert set(_entry_ids(second)) & set(old) <= {old[-1]}
    finally:
        second.stop()


def test_a_negative_retention_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([*KEYLESS, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
                           "--audit-retention-days", "-1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--audit-retention-days" in proc.stderr
    assert not (tmp_path / "data" / "keyless.db").exists()


def _store_entries_aged(db: Path, days: list[float]) -> list[str]:
    """Audit entries stamped ``days`` ago, written into the SQLite store a server will then open."""
    async def write() -> list[str]:
        store = SqliteStore(db)
        await store.open()
        now = time.time()
        entries = [AuditEntry(f"aged-{age:g}d", now - age * 86400, "SetIAMPolicy", "owner@keyless.local", "r", False,
                              {}) for age in days]
        await store.append_audit(entries)
        await store.close()
        return [e.insert_id for e in entries]

    return asyncio.run(write())


def test_the_embedded_store_keeps_30_days_by_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    older, younger = _store_entries_aged(data / "keyless.db", [30.5, 29.5])
    server = start_server(data)  # no --audit-retention-days
    try:
        deadline = time.monotonic() + 30
        while older in _entry_ids(server):
            assert time.monotonic() < deadline, "an entry older than 30 days was kept"
            time.sleep(0.05)
        assert younger in _entry_ids(server)
    finally:
        server.stop()


def test_postgresql_needs_an_explicit_retention(tmp_path: Path) -> None:
    # Refused before anything is opened: the database need not exist.
    proc = subprocess.run([*KEYLESS, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--database",
                           "postgresql://keyless@127.0.0.1:1/keyless"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "--audit-retention-days" in proc.stderr, proc.stderr
    assert not (tmp_path / "data").exists()
