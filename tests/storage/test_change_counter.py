"""The change counter SQLite stores share through a memory-mapped file: seen by every process, never losing an
increment when processes bump it at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from keyless.storage.changes import ChangeCounter


def _bump(path: str, times: int) -> None:
    counter = ChangeCounter(Path(path))
    for _ in range(times):
        counter.increment()
    counter.close()


def test_an_increment_is_seen_through_every_mapping(tmp_path: Path) -> None:
    first, second = ChangeCounter(tmp_path / "db-changes"), ChangeCounter(tmp_path / "db-changes")
    assert first.read() == second.read() == 0
    assert first.increment() == 1
    assert second.read() == 1
    assert second.increment() == 2
    assert first.read() == 2
    first.close()
    second.close()
    reopened = ChangeCounter(tmp_path / "db-changes")
    assert reopened.read() == 2
    reopened.close()


def test_concurrent_processes_lose_no_increment(tmp_path: Path) -> None:
    path = tmp_path / "db-changes"
    ChangeCounter(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_bump, args=(str(path), 400)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    counter = ChangeCounter(path)
    assert counter.read() == 1600
    counter.close()
