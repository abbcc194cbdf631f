"""PostgreSQL's state generation from memory (``keyless.storage.notify``): no query per request while the listening
connection vouches for it, a change by another store seen within the bound, and no trust in memory past the bound
when that connection is terminated or stops answering (its backend stopped, as in a network partition): the store
reads the generation per request until the watch is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from keyless.storage import notify
from keyless.storage.postgres import PostgresStore

BOUND = 1.0  # docs/operations.md: a change reaches every replica within 1 s (notify.MAX_STALENESS = 0.5 s)


class CountingStore(PostgresStore):
    """Counts the generation queries made on behalf of callers (not the watch's own reads)."""

    reads = 0

    async def _read_generation(self) -> int:
        self.reads += 1
        return await super()._read_generation()


async def _from_memory(store: CountingStore, within: float = 10.0) -> None:
    """Wait (polling, with a deadline) until the store answers the generation without a query."""
    deadline = time.monotonic() + within
    while True:
        before = store.reads
        await store.generation()
        if store.reads == before:
            return
        assert time.monotonic() < deadline, "the generation watch vouched for memory"
        await asyncio.sleep(0.01)


async def _moved(store: PostgresStore, past: int) -> float:
    """Seconds until ``store``'s generation is past ``past``; fails beyond BOUND."""
    started = time.monotonic()
    while await store.generation() <= past:
        assert time.monotonic() - started <= BOUND, f"a change was seen within {BOUND} s"
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def _watch_backends(admin: asyncpg.Connection, dsn: str) -> list[int]:
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
                             notify.APPLICATION_NAME, dsn.rsplit("/", 1)[1])
    return [int(r[0]) for r in rows]


@contextlib.asynccontextmanager
async def _stores(dsn: str, count: int, changes: Path | None = None) -> AsyncIterator[list[CountingStore]]:
    stores = [CountingStore(dsn, min_size=1, max_size=2, changes=changes) for _ in range(count)]
    for store in stores:
        await store.open()
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


@contextlib.asynccontextmanager
async def _stalled(pids: list[int]) -> AsyncIterator[None]:
    """The backends stop (SIGSTOP): their connections stay open and answer nothing, as across a partition."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_the_generation_is_answered_from_memory_and_a_change_elsewhere_arrives_by_notification(postgres: Any) -> None:
    dsn = postgres.create_database("watch")

    async def scenario() -> None:
        async with _stores(dsn, 2) as (store, other):
            await _from_memory(store)
            reads = store.reads
            for _ in range(100):
                await store.generation()
            assert store.reads == reads, "no query per request while the watch listens"
            before = await store.generation()
            await other.bump_generation()
            await _moved(store, before)
            assert store.reads == reads, "the change came by notification, not by a query"

    asyncio.run(scenario())


def test_a_terminated_listening_connection_falls_back_to_a_query_per_request_until_it_is_back(
        postgres: Any) -> None:
    dsn = postgres.create_database("watch_killed")

    async def scenario() -> None:
        admin = await asyncpg.connect(postgres.dsn())
        try:
            async with _stores(dsn, 2) as (store, other):
                await _from_memory(store)
                await _from_memory(other)
                before = await store.generation()
                killed = await _watch_backends(admin, dsn)
                assert len(killed) == 2  # each store's watch
                await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", killed)
                await other.bump_generation()  # its notification reaches no listener of the old connections
                await _moved(store, before)
                # The watches connect again, and memory answers again.
                await _from_memory(store)
                await _from_memory(other)
                back = await _watch_backends(admin, dsn)
                assert len(back) == 2 and not set(back) & set(killed)
        finally:
            await admin.close()

    asyncio.run(scenario())


def test_a_listening_connection_that_stops_answering_is_not_trusted_past_the_bound(postgres: Any) -> None:
    """A partition leaves the connection open: only the watch's completed reads keep memory trusted, so a change
    made while no notification can arrive is seen within the bound all the same."""
    dsn = postgres.create_database("watch_stalled")

    async def scenario() -> None:
        admin = await asyncpg.connect(postgres.dsn())
        try:
            async with _stores(dsn, 2) as (store, other):
                await _from_memory(store)
                await _from_memory(other)
                before = await store.generation()
                stalled = await _watch_backends(admin, dsn)
                async with _stalled(stalled):
                    await other.bump_generation()
                    reads = store.reads
                    await _moved(store, before)
                    assert store.reads > reads, "the store read the generation itself"
                    await _from_memory(store)  # a new watch connection, on a backend that answers
                await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", stalled)
        finally:
            await admin.close()

    asyncio.run(scenario())


def test_the_processes_of_one_replica_see_its_change_at_once(postgres: Any, tmp_path: Path) -> None:
    """``--workers N``: the processes of one replica share a change counter in its data dir, so a change one of
    them makes is enforced by all at once, even with no notification coming."""
    dsn = postgres.create_database("watch_workers")

    async def scenario() -> None:
        admin = await asyncpg.connect(postgres.dsn())
        try:
            async with _stores(dsn, 2, changes=tmp_path / "postgres-changes") as (worker, sibling):
                await _from_memory(worker)
                await _from_memory(sibling)
                before = await sibling.generation()
                stalled = await _watch_backends(admin, dsn)
                async with _stalled(stalled):
                    reads = sibling.reads
                    await worker.bump_generation()
                    assert await sibling.generation() > before
                    assert sibling.reads == reads, "from memory: the shared counter, not a query"
                await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", stalled)
        finally:
            await admin.close()

    asyncio.run(scenario())
