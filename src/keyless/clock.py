"""Injected time: every time-dependent rule reads one ``Clock``, so tests can step through expiry."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from keyless.errors import MalformedData


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    # time.time itself (no Python frame between): every request reads the clock several times.
    now = staticmethod(time.time)


class OffsetClock:
    """The system clock plus an offset that only moves forward (``--allow-time-travel``)."""

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise MalformedData("the clock only moves forward")
        with self._lock:
            self._offset += seconds

    @property
    def offset(self) -> float:
        return self._offset


class FrozenClock:
    """A clock that moves only when told to: for domain and in-process tests."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = when
