"""A change counter in a small memory-mapped file beside a SQLite database, shared by every process that opens
the database, so a request learns whether the stored state changed with one memory read instead of a query.

Writers increment it under an exclusive ``flock`` after their change is committed (never concurrently, never
backwards); readers only compare it with the value their cache was filled at, so any change, even a torn
read, sends them to the database. SQLite is one machine's database, so one file mapping reaches every
process using it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_COUNTER = struct.Struct("<Q")


class ChangeCounter:
    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < mmap.PAGESIZE:
                    os.ftruncate(fd, mmap.PAGESIZE)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, mmap.PAGESIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def read(self) -> int:
        value: int = _COUNTER.unpack_from(self._map)[0]
        return value

    def increment(self) -> int:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = (self.read() + 1) % (1 << 63)
            _COUNTER.pack_into(self._map, 0, value)
            return value
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
