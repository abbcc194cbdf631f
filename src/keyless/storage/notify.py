"""The state generation of a PostgreSQL database, known from memory while a listening connection vouches for it.

Every state change increases the counter row ``meta.generation`` and, in the same statement, notifies channel
``keyless_generation`` with the new value (``bump``). Each keyless process keeps one connection of its own
(``GenerationWatch``, application_name ``keyless generation watch``) that LISTENs on that channel and reads the
counter again every ``POLL_INTERVAL``. While the last of those reads *began* less than ``MAX_STALENESS`` ago,
``current()`` answers the generation from memory: the value that read returned, raised by every notification
since. Otherwise (the connection not up yet, closed or terminated, or no longer answering) ``current()`` answers
None and the store reads the counter per request, as it did before, until the watch is back.

The bound: a change whose counter increase committed at time t reaches every process that checks the generation
after t + MAX_STALENESS. An answer from memory at that moment rests on a read that began after t, so that read,
or a notification before it, carried the increase. Notifications make it milliseconds when the connection is
healthy; the bound holds when it is not (a silent network partition, a stalled or killed backend, a lost
notification), because nothing but a completed read extends the trust in memory.

The value carries which server answered (when it started, as ``PostgresStore`` always did): a promoted standby may
hold a change whose counter increase never committed on it, so caches filled from another server are dropped
whatever the counter says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

log = logging.getLogger("keyless.storage")

CHANNEL = "keyless_generation"
APPLICATION_NAME = "keyless generation watch"
# How often the watch reads the counter even though notifications arrive, and how long after a read began its
# value (with the notifications since) may answer for the generation. MAX_STALENESS is the propagation bound of
# docs/operations.md; POLL_INTERVAL leaves a read up to MAX_STALENESS - POLL_INTERVAL to answer before the store
# falls back to a query per request.
POLL_INTERVAL = 0.1
MAX_STALENESS = 0.5
RECONNECT_DELAY_MAX = 2.0

# The counter, and which server answers (when it started, in microseconds).
READ = ("SELECT (SELECT value FROM meta WHERE key='generation'), "
        "(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint")
# The increase and its notification in one statement: the notification is delivered when the increase commits.
BUMP = ("WITH bumped AS (INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT (key) "
        "DO UPDATE SET value = (meta.value::bigint + 1)::text RETURNING value) "
        f"SELECT value::bigint, pg_notify('{CHANNEL}', value) FROM bumped")


def generation_of(row: Any) -> int:
    """The generation a ``READ`` row stands for: the counter, and the server above it."""
    value, server = row
    return compose(int(value) if value is not None else 0, int(server))


def compose(counter: int, server: int) -> int:
    return counter + (server << 64)


@dataclass
class _Session:
    """One listening connection and what it has learnt: its server, the counter, when it was last vouched for."""

    conn: asyncpg.Connection
    server: int = -1
    counter: int = 0
    vouched_at: float = -math.inf


class GenerationWatch:
    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], *, poll_interval: float = POLL_INTERVAL,
                 max_staleness: float = MAX_STALENESS) -> None:
        self._connect = connect
        self.poll_interval = poll_interval
        self.max_staleness = max_staleness
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="keyless generation watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def current(self) -> int | None:
        """The generation from memory, or None when memory may be stale: then ask the database."""
        session = self._session
        if session is None or self._loop is None or self._loop.time() - session.vouched_at >= self.max_staleness:
            return None
        return compose(session.counter, session.server)

    def saw(self, counter: int) -> None:
        """This process increased the counter to ``counter``: its own view moves at once, not when the
        notification comes back."""
        session = self._session
        if session is not None and counter > session.counter:
            session.counter = counter

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        session = self._session
        if session is not None and session.conn is conn:
            with contextlib.suppress(ValueError):
                session.counter = max(session.counter, int(payload))

    def _lost(self, conn: Any) -> None:
        # The connection closed (terminated by the server, reset): stop answering from memory at once.
        session = self._session
        if session is not None and session.conn is conn:
            self._session = None

    async def _run(self) -> None:
        assert self._loop is not None
        delay = self.poll_interval
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect()
                session = _Session(conn)
                self._session = session  # notifications count from here on; memory answers once a read vouches
                conn.add_termination_listener(self._lost)
                # Listening first: a change committed after the read below is notified, one before it is read.
                await conn.add_listener(CHANNEL, self._notified)
                while True:  # until the connection fails (a read on a closed connection raises)
                    began = self._loop.time()
                    value, server = await conn.fetchrow(READ, timeout=self.max_staleness)
                    # One connection, one server: the counter only grows (a notification may have outrun the read).
                    session.server = int(server)
                    session.counter = max(session.counter, int(value) if value is not None else 0)
                    session.vouched_at = began
                    if self._down:
                        self._down = False
                        log.warning("generation watch listening again: the generation is answered from memory")
                    delay = self.poll_interval
                    await asyncio.sleep(self.poll_interval)
            except Exception as exc:  # any failure of this connection means: a query per request until it is back
                if not self._down:
                    self._down = True
                    log.warning("generation watch lost (%s): the generation is read per request until it is back",
                                type(exc).__name__)
            finally:
                self._session = None
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)
