"""Every storage backend runs the same conformance suite: add a backend to ``BACKENDS`` and it is tested."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyless.storage.base import Store
from keyless.storage.sqlite import SqliteStore

_DSN = pytest.StashKey[str]()  # the PostgreSQL database of the running test


def _sqlite(tmp_path: Path) -> Store:
    return SqliteStore(tmp_path / "conformance.db")


def _postgres(request: pytest.FixtureRequest) -> Store:
    from keyless.storage.postgres import PostgresStore

    # One database per test: a second store in the same test (Runner.twin) opens the first one's.
    if _DSN not in request.node.stash:
        request.node.stash[_DSN] = request.getfixturevalue("postgres").create_database("conformance")
    return PostgresStore(request.node.stash[_DSN], min_size=1, max_size=4)


def _cached_sqlite(request: pytest.FixtureRequest) -> Store:
    from keyless.storage.cache import CachingStore

    return CachingStore(_sqlite(request.getfixturevalue("tmp_path")))


def _cached_postgres(request: pytest.FixtureRequest) -> Store:
    from keyless.storage.cache import CachingStore

    return CachingStore(_postgres(request))


# Each factory, called twice in one test, opens two stores on one database (as two processes would).
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Store]] = {
    "sqlite": lambda request: _sqlite(request.getfixturevalue("tmp_path")),
    "postgresql": _postgres,
    # The read cache, with the whole test as one long request: every write must invalidate what it cached.
    "sqlite-cached": _cached_sqlite,
    "postgresql-cached": _cached_postgres,
}


class Runner:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, twin: Callable[[], Store]) -> None:
        self.store = store
        self.loop = loop
        self.twin = twin  # another store on the same database, not yet opened (another process's)

    def __call__(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(params=sorted(BACKENDS))
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runner]:
    from keyless.storage.cache import request_scope

    loop = asyncio.new_event_loop()
    store = BACKENDS[request.param](request)
    loop.run_until_complete(store.open())
    with request_scope() if request.param.endswith("-cached") else contextlib.nullcontext():
        yield Runner(store, loop, lambda: BACKENDS[request.param](request))
    loop.run_until_complete(store.close())
    loop.close()
