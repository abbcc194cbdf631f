"""A read that began before a write and ends after it must not be cached as if it were current: the next request
would be served the state from before the write until the next change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from keyless.storage.cache import CachingStore, request_scope
from keyless.storage.sqlite import SqliteStore


def test_a_read_overtaken_by_a_write_is_not_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        inner = SqliteStore(tmp_path / "keyless.db")
        store = CachingStore(inner)
        await store.open()
        try:
            await store.put_policy("projects/p", {"bindings": []}, "old", expected_etag=None)
            gate = asyncio.Event()
            started = asyncio.Event()
            real_get = inner.get_policy

            async def slow_get(resource: str) -> Any:
                # The row is read, then the answer is held back: a slow database round trip (the fault this
                # test needs, which timing alone cannot provoke reliably).
                value = await real_get(resource)
                started.set()
                await gate.wait()
                return value

            inner.get_policy = slow_get  # type: ignore[method-assign]

            async def slow_request() -> Any:
                with request_scope():
                    return await store.get_policy("projects/p")

            reader = asyncio.create_task(slow_request())
            await started.wait()
            inner.get_policy = real_get  # type: ignore[method-assign]
            await store.put_policy("projects/p", {"bindings": []}, "new", expected_etag="old")
            with request_scope():  # a request after the write: the cache is current again
                await store.get_policy("projects/other")
            gate.set()
            stale = await reader
            assert stale is not None and stale.etag == "old"  # what the slow request read, before the write
            with request_scope():
                current = await store.get_policy("projects/p")
            assert current is not None and current.etag == "new"
        finally:
            await store.close()

    asyncio.run(scenario())
