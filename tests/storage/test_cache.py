"""The read cache: one generation check per request, and a change made by another process is seen by the
next request."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keyless.storage.base import ServiceAccount
from keyless.storage.cache import CachingStore, request_scope
from keyless.storage.sqlite import SqliteStore


def _sa(disabled: bool = False) -> ServiceAccount:
    return ServiceAccount("100000000000000000001", "p", "cached-sa", "cached-sa@p.iam.gserviceaccount.com",
                          disabled=disabled, created_at=1.0)


def test_change_by_another_process_is_seen_by_the_next_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = CachingStore(SqliteStore(tmp_path / "db.sqlite"))
        b = CachingStore(SqliteStore(tmp_path / "db.sqlite"))  # another replica on the same database
        await a.open()
        await b.open()
        try:
            await a.create_service_account(_sa())
            with request_scope():
                first = await b.find_service_account("cached-sa@p.iam.gserviceaccount.com")
                assert first is not None and not first.disabled
            await a.update_service_account(first.unique_id, disabled=True)
            with request_scope():
                again = await b.find_service_account("cached-sa@p.iam.gserviceaccount.com")
                assert again is not None and again.disabled
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_reads_in_one_request_cost_one_generation_query(tmp_path: Path) -> None:
    class Counting(SqliteStore):
        calls = 0

        async def find_service_account(self, email: str) -> ServiceAccount | None:
            Counting.calls += 1
            return await super().find_service_account(email)

    async def scenario() -> None:
        store = CachingStore(Counting(tmp_path / "db.sqlite"))
        await store.open()
        try:
            await store.create_service_account(_sa())
            for _ in range(3):
                with request_scope():
                    for _ in range(5):
                        assert await store.find_service_account("cached-sa@p.iam.gserviceaccount.com")
            assert Counting.calls == 1  # the state never changed: one load, then cache hits
            # Outside a request nothing is cached.
            await store.find_service_account("cached-sa@p.iam.gserviceaccount.com")
            assert Counting.calls == 2
        finally:
            await store.close()

    asyncio.run(scenario())
