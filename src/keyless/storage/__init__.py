"""Storage: one protocol (``base.Store``) and its backends. Nothing outside this package writes SQL."""

from __future__ import annotations

from pathlib import Path

from keyless.storage.base import Store


def open_store(database: str | None, data_dir: Path) -> Store:
    """The store named by ``--database`` (a ``sqlite:///`` path or URL), defaulting to SQLite in the data dir."""
    from keyless.storage.cache import CachingStore
    from keyless.storage.sqlite import SqliteStore

    if not database:
        return CachingStore(SqliteStore(data_dir / "keyless.db"))
    if database.startswith("sqlite:///"):
        return CachingStore(SqliteStore(Path(database[len("sqlite:///"):])))
    if database.startswith(("postgresql://", "postgres://")):
        from keyless.storage.postgres import PostgresStore

        # The replica's processes (--workers N) share its data dir: a change one makes, the others see at once.
        return CachingStore(PostgresStore(database, changes=data_dir / "postgres-changes"))
    raise SystemExit(f"Unsupported --database URL: {database!r} (use sqlite:///PATH)")
