"""The audit log's group commit, on a real SQLite store: the entries of requests the event loop has ready share
one transaction, a lone entry is committed at once, and a failed transaction fails every request in it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keyless.clock import FrozenClock
from keyless.service.audit import AuditLog, AuditRecord
from keyless.storage.base import AuditEntry, AuditQuery
from keyless.storage.sqlite import SqliteStore


class CountingStore(SqliteStore):
    """The SQLite store, recording the size of each audit transaction; optionally failing them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions: list[int] = []
        self.fail = False

    async def append_audit(self, entries: list[AuditEntry]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.transactions.append(len(entries))
        await super().append_audit(entries)


def _work(seconds: float) -> None:
    """CPU-bound work of a given length in a loop turn (a signature, say)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _record(n: int) -> AuditRecord:
    record = AuditRecord("127.0.0.1", "test")
    record.method = "SignBlob"
    record.principal = f"user-{n}@example.com"
    return record


async def _with_store(tmp_path: Path, body: object) -> None:
    store = CountingStore(tmp_path / "keyless.db")
    await store.open()
    try:
        await body(store)  # type: ignore[operator]
    finally:
        await store.close()


def test_requests_ready_together_share_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bounded by turns only here: on a busy machine four turns of 40 requests may take longer than the 1 ms bound.
    monkeypatch.setattr(AuditLog, "GATHER_SECONDS", 60.0)

    async def body(store: CountingStore) -> None:
        log = AuditLog(store, FrozenClock())

        async def request(n: int, turns: int) -> None:
            for _ in range(turns):  # requests that reach their commit a few loop turns after the first
                await asyncio.sleep(0)
            await log.commit(_record(n), 200)

        await asyncio.gather(*(request(n, n % 4) for n in range(40)))
        assert store.transactions == [40]
        stored = await store.query_audit(AuditQuery(limit=100))
        assert sorted(e.principal for e in stored) == sorted(f"user-{n}@example.com" for n in range(40))

    asyncio.run(_with_store(tmp_path, body))


def test_gathering_stops_after_a_bounded_number_of_turns(tmp_path: Path) -> None:
    async def body(store: CountingStore) -> None:
        log = AuditLog(store, FrozenClock())

        async def trickle() -> None:
            # A new request reaches its commit on every loop turn: the first transaction does not wait for all.
            for n in range(3 * AuditLog.GATHER_TURNS):
                asyncio.get_running_loop().create_task(log.commit(_record(n), 200))
                await asyncio.sleep(0)

        await trickle()
        while sum(store.transactions) < 3 * AuditLog.GATHER_TURNS:
            await asyncio.sleep(0)
        assert len(store.transactions) > 1
        assert max(store.transactions) <= AuditLog.GATHER_TURNS + 1

    asyncio.run(_with_store(tmp_path, body))


def test_a_lone_request_is_committed_without_waiting_for_others(tmp_path: Path) -> None:
    async def body(store: CountingStore) -> None:
        log = AuditLog(store, FrozenClock())
        await asyncio.wait_for(log.commit(_record(1), 200), timeout=5)
        assert store.transactions == [1]

    asyncio.run(_with_store(tmp_path, body))


def test_a_failed_transaction_fails_every_request_in_it(tmp_path: Path) -> None:
    async def body(store: CountingStore) -> None:
        log = AuditLog(store, FrozenClock())
        store.fail = True
        results = await asyncio.gather(*(log.commit(_record(n), 200) for n in range(5)), return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
        store.fail = False
        await log.commit(_record(99), 200)
        stored = await store.query_audit(AuditQuery(limit=100))
        assert [e.principal for e in stored] == ["user-99@example.com"]

    asyncio.run(_with_store(tmp_path, body))


@pytest.mark.parametrize("turns", [0, 1])
def test_gathering_can_be_turned_down(tmp_path: Path, turns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(store: CountingStore) -> None:
        monkeypatch.setattr(AuditLog, "GATHER_TURNS", turns)
        log = AuditLog(store, FrozenClock())

        async def late(n: int) -> None:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            await log.commit(_record(n), 200)

        await asyncio.gather(log.commit(_record(0), 200), *(late(n) for n in range(1, 4)))
        assert sum(store.transactions) == 4
        assert store.transactions[0] == 1  # the late ones arrived after the first transaction was taken

    asyncio.run(_with_store(tmp_path, body))


def test_gathering_stops_after_a_bounded_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(store: CountingStore) -> None:
        monkeypatch.setattr(AuditLog, "GATHER_TURNS", 10_000)
        monkeypatch.setattr(AuditLog, "GATHER_SECONDS", 0.005)
        log = AuditLog(store, FrozenClock())

        async def trickle() -> None:
            # Each loop turn does 1 ms of work (a signature, say) and brings one more request to its commit.
            for n in range(40):
                asyncio.get_running_loop().create_task(log.commit(_record(n), 200))
                _work(0.001)
                await asyncio.sleep(0)

        await trickle()
        while sum(store.transactions) < 40:
            await asyncio.sleep(0)
        assert len(store.transactions) >= 4
        assert store.transactions[0] <= 10

    asyncio.run(_with_store(tmp_path, body))
