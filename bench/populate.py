"""Fill a keyless database fast, with bulk SQL matching ``src/keyless/storage/*.py``'s schema.

N service accounts in the default project, each with its own allow policy of ``bindings_per_account``
single-member bindings (100,000 x 10 = 1,000,000 bindings and members). The benchmark's target account
gets a 1,000-member Token Creator binding through the API (``big_binding``), the owner among the members.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from keyless.domain.policy import new_etag

PROJECT = "keyless-dev"
ROLES = ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator", "roles/viewer",
         "roles/iam.serviceAccountKeyAdmin", "roles/iam.serviceAccountAdmin", "roles/iam.workloadIdentityUser",
         "roles/iam.serviceAccountOpenIdTokenCreator", "roles/editor", "roles/browser", "roles/iam.securityReviewer")


def _unique_id(i: int) -> str:
    return f"9{i:020d}"  # 21 digits like keyless's own, in a range new_unique_id() (leading "1") never uses


def _email(i: int) -> str:
    return f"scale-{i:06d}@{PROJECT}.iam.gserviceaccount.com"


def _rows(accounts: int, per_account: int, seed: int = 7) -> Iterator[tuple[tuple[object, ...], tuple[str, str, str]]]:
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    now = time.time()
    for i in range(accounts):
        account = (_unique_id(i), PROJECT, f"scale-{i:06d}", _email(i), f"scale account {i}", "", 0, None, now, 0.0)
        bindings = []
        for b in range(per_account):
            j = rng.randrange(accounts)
            member = f"serviceAccount:{_email(j)}" if b % 2 else f"user:user-{j}@example.com"
            bindings.append({"role": ROLES[b % len(ROLES)], "members": [member]})
        body = orjson.dumps({"version": 1, "bindings": bindings}).decode()
        policy = (f"projects/{PROJECT}/serviceAccounts/{_unique_id(i)}", body, new_etag())
        yield account, policy


SA_COLS = ("unique_id, project_id, account_id, email, display_name, description, disabled, deleted_at, created_at, "
           "tokens_valid_after")


def populate_sqlite(db_path: Path, accounts: int, per_account: int) -> dict[str, float]:
    """Bulk-insert into a database a running server has open (WAL allows the second writer)."""
    t0 = time.perf_counter()
    db = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=60000")
        chunk = 20_000
        rows = _rows(accounts, per_account)
        done = 0
        while done < accounts:
            batch = [next(rows) for _ in range(min(chunk, accounts - done))]
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT INTO service_accounts ({SA_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [a for a, _ in batch])
            db.executemany("INSERT INTO policies (resource, body, etag) VALUES (?, ?, ?)", [p for _, p in batch])
            db.execute("COMMIT")
            done += len(batch)
    finally:
        db.close()
    settle_sqlite(db_path)
    return {"seconds": time.perf_counter() - t0, "accounts": accounts, "bindings": accounts * per_account}


def settle_sqlite(db_path: Path) -> None:
    """What populating ends with (the WAL copied back and truncated, fresh planner statistics); the empty
    database of a scale comparison gets it too, so that the two differ only in their rows."""
    db = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=60000")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("ANALYZE")
    finally:
        db.close()


async def _populate_postgres(dsn: str, accounts: int, per_account: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        chunk = 20_000
        rows = _rows(accounts, per_account)
        done = 0
        while done < accounts:
            batch = [next(rows) for _ in range(min(chunk, accounts - done))]
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "service_accounts", columns=[c.strip() for c in SA_COLS.split(",")],
                    records=[(*a[:6], bool(a[6]), *a[7:]) for a, _ in batch])
                await conn.copy_records_to_table("policies", columns=["resource", "body", "etag"],
                                                 records=[p for _, p in batch])
            done += len(batch)
    finally:
        await conn.close()
    await _settle_postgres(dsn)


async def _settle_postgres(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def settle_postgres(dsn: str) -> None:
    """Fresh planner statistics for every table (see settle_sqlite)."""
    asyncio.run(_settle_postgres(dsn))


def populate_postgres(dsn: str, accounts: int, per_account: int) -> dict[str, float]:
    t0 = time.perf_counter()
    asyncio.run(_populate_postgres(dsn, accounts, per_account))
    return {"seconds": time.perf_counter() - t0, "accounts": accounts, "bindings": accounts * per_account}


def big_binding_members(owner_member: str, size: int = 1000) -> list[str]:
    """``size`` members, the owner last: a list a linear scan would walk to the end."""
    others = [f"user:big-{i:04d}@example.com" if i % 2 else f"serviceAccount:{_email(i)}" for i in range(size - 1)]
    return [*others, owner_member]
