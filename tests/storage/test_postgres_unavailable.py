"""A PostgreSQL that cannot serve is ``Unavailable`` at the storage boundary (no asyncpg exception goes further), and
the store serves again by itself once it can: a read-only database (a standby), connections closed under the
pool, a write that waits past the timeout. Failover itself: tests/replicas/test_failover.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from keyless.errors import Unavailable
from keyless.storage.base import AuditEntry, AuditQuery
from keyless.storage.cache import CachingStore
from keyless.storage.postgres import PostgresStore


async def _terminate_connections(admin: asyncpg.Connection, database: str) -> None:
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database)


def test_a_read_only_database_fails_writes_as_unavailable_and_reads_go_on(postgres: Any) -> None:
    dsn = postgres.create_database("readonly")
    name = dsn.rsplit("/", 1)[1]

    async def scenario() -> None:
        store = PostgresStore(dsn, min_size=1, max_size=2)
        await store.open()
        admin = await asyncpg.connect(postgres.dsn())
        try:
            await store.set_meta("k", "before")
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            await _terminate_connections(admin, name)
            with pytest.raises(Unavailable):  # the connection closed under it, or the new one read-only
                await store.set_meta("k", "after")
            assert await store.get_meta("k") == "before"
            with pytest.raises(Unavailable):
                await store.set_meta("k", "after")

            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            await _terminate_connections(admin, name)
            deadline = time.monotonic() + 10
            while True:  # the first operation may meet the closed connection; then the store reconnects
                try:
                    await store.set_meta("k", "after")
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, "the store reconnected"
            assert await store.get_meta("k") == "after"
        finally:
            await admin.close()
            await store.close()

    asyncio.run(scenario())


def test_a_write_past_the_timeout_is_unavailable_and_the_change_counter_moves_once_the_database_answers(
        postgres: Any) -> None:
    """The write may have committed all the same (its acknowledgement lost): every replica must drop what it
    cached, so the counter increase that could not be made then is made in the background as soon as it can."""
    dsn = postgres.create_database("timeout")

    async def scenario() -> None:
        store = CachingStore(PostgresStore(dsn, min_size=1, max_size=4, timeout=1.0, query_timeout=0.5))
        await store.open()
        holder = await asyncpg.connect(dsn)
        try:
            await store.put_policy("r", {"bindings": []}, "e1", expected_etag=None)
            before = await store.generation()
            # Another session holds the rows the write and the counter increase need: both wait past the timeout.
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM policies WHERE resource = 'r' FOR UPDATE")
            await holder.execute("SELECT 1 FROM meta WHERE key = 'generation' FOR UPDATE")
            with pytest.raises(Unavailable):
                await store.put_policy("r", {"bindings": []}, "e2", expected_etag="e1")
            assert await store.generation() == before
            await transaction.rollback()
            deadline = time.monotonic() + 15
            while await store.generation() == before:
                assert time.monotonic() < deadline, "the change counter moved once the rows were free"
                await asyncio.sleep(0.02)
        finally:
            await holder.close()
            await store.close()

    asyncio.run(scenario())


def test_the_audit_connection_closed_under_the_store_is_replaced_and_never_escapes_as_an_asyncpg_error(
        postgres: Any) -> None:
    """The connection kept for audit appends is idle between batches; when its server connection closes (a failover,
    a terminated backend) the pool takes it back. A later failure of another operation must still be Unavailable,
    and the next append must take a new connection instead of failing."""
    dsn = postgres.create_database("auditconn")
    name = dsn.rsplit("/", 1)[1]

    def entry(n: int) -> AuditEntry:
        return AuditEntry(f"id{n}", float(n), "SignBlob", "a@x", "r", False, {"n": n})

    async def audit_connection_released(store: PostgresStore) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                if store._audit_conn.is_closed():
                    return
            except asyncpg.InterfaceError:  # already taken back by the pool
                return
            assert time.monotonic() < deadline, "the store saw its audit connection close"
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        store = PostgresStore(dsn, min_size=1, max_size=2)
        await store.open()
        admin = await asyncpg.connect(postgres.dsn())
        try:
            await store.append_audit([entry(1)])
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            await _terminate_connections(admin, name)
            await audit_connection_released(store)
            with pytest.raises(Unavailable):
                await store.set_meta("k", "v")

            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            await _terminate_connections(admin, name)
            await store.get_meta("k")  # the pool reconnects
            await store.append_audit([entry(2)])  # holds a new audit connection
            await _terminate_connections(admin, name)
            await audit_connection_released(store)
            await store.append_audit([entry(3)])
            assert [e.body["n"] for e in await store.query_audit(AuditQuery())] == [1, 2, 3]
        finally:
            await admin.close()
            await store.close()

    asyncio.run(scenario())
