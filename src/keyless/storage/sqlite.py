"""SQLite backend (WAL): the embedded default.

Statements run synchronously on the event loop: a primary-key read or a single-row commit costs tens of
microseconds with ``sqlite3``, far less than handing each call to a thread (see the performance issue).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from keyless.errors import NotReady
from keyless.storage.base import (
    KEY_UPDATABLE,
    SERVICE_ACCOUNT_UPDATABLE,
    USER_UPDATABLE,
    WORKLOAD_POOL_UPDATABLE,
    WORKLOAD_PROVIDER_UPDATABLE,
    AuditEntry,
    AuditQuery,
    AuthorizationCode,
    Conflict,
    KeyRecord,
    OrgPolicy,
    Project,
    ServiceAccount,
    SignInGrant,
    StoredPolicy,
    User,
    WorkloadPool,
    WorkloadProvider,
    check_updatable,
)
from keyless.storage.changes import ChangeCounter
from keyless.storage.migrations import PROJECT_SERVICES_BACKFILL
from keyless.storage.rows import (
    AUDIT_COLUMNS,
    POLICY_COLUMNS,
    Row,
    as_audit_entry,
    as_code,
    as_grant,
    as_key,
    as_org_policy,
    as_project,
    as_service_account,
    as_user,
    as_workload_pool,
    as_workload_provider,
    code_row,
    grant_row,
    key_row,
    org_policy_row,
    project_row,
    service_account_row,
    stored_changes,
    user_row,
    workload_pool_row,
    workload_provider_row,
)
from keyless.storage.rows import SQLITE as _SQL

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE projects (project_id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
    CREATE TABLE service_accounts (
        unique_id TEXT PRIMARY KEY, project_id TEXT NOT NULL, account_id TEXT NOT NULL, email TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '',
        disabled INTEGER NOT NULL DEFAULT 0, deleted_at REAL, created_at REAL NOT NULL);
    CREATE UNIQUE INDEX service_accounts_active_email ON service_accounts (email) WHERE deleted_at IS NULL;
    CREATE INDEX service_accounts_project ON service_accounts (project_id, email);
    CREATE TABLE keys (
        key_id TEXT PRIMARY KEY, owner TEXT NOT NULL, key_type TEXT NOT NULL, key_origin TEXT NOT NULL,
        certificate_pem BLOB NOT NULL, private_key_enc BLOB, valid_after REAL NOT NULL,
        valid_before REAL NOT NULL, created_at REAL NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
        retired_at REAL, deleted_at REAL);
    CREATE INDEX keys_owner ON keys (owner, created_at);
    CREATE TABLE policies (resource TEXT PRIMARY KEY, body TEXT NOT NULL, etag TEXT NOT NULL);
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, client_id TEXT NOT NULL UNIQUE,
        client_secret_hash TEXT NOT NULL, refresh_token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE group_members (grp TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (grp, member));
    CREATE INDEX group_members_member ON group_members (member);
    CREATE TABLE groups (grp TEXT PRIMARY KEY);
    CREATE TABLE org_policies (
        resource TEXT NOT NULL, constraint_name TEXT NOT NULL, spec TEXT NOT NULL, etag TEXT NOT NULL,
        updated_at REAL NOT NULL, PRIMARY KEY (resource, constraint_name));
    CREATE TABLE revoked_tokens (token_hash TEXT PRIMARY KEY, expires_at REAL NOT NULL);
    """,
    # 2: tokens minted before an account was deleted stay dead after it is undeleted
    """
    ALTER TABLE service_accounts ADD COLUMN tokens_valid_after REAL NOT NULL DEFAULT 0;
    """,
    # 3: the audit log
    """
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, insert_id TEXT NOT NULL, timestamp REAL NOT NULL,
        method TEXT NOT NULL, principal TEXT NOT NULL, resource TEXT NOT NULL, denied INTEGER NOT NULL,
        body TEXT NOT NULL);
    CREATE INDEX audit_log_time ON audit_log (timestamp);
    CREATE INDEX audit_log_principal ON audit_log (principal, seq);
    CREATE INDEX audit_log_resource ON audit_log (resource, seq);
    """,
    # 4: at most one system-managed key in force per owner (key rotation happens once)
    """
    CREATE UNIQUE INDEX keys_one_current_system_key ON keys (owner)
        WHERE key_type = 'SYSTEM_MANAGED' AND retired_at IS NULL AND deleted_at IS NULL;
    """,
    # 5: the audit log is appended to on every credential and read rarely: its three indexes cost more than
    # the row itself on each insert (and most of the WAL traffic). A time bound is found by binary search on
    # seq; other filters scan forward from there.
    """
    DROP INDEX IF EXISTS audit_log_time;
    DROP INDEX IF EXISTS audit_log_principal;
    DROP INDEX IF EXISTS audit_log_resource;
    """,
    # 6: without AUTOINCREMENT, each audit commit no longer rewrites sqlite_sequence (a quarter of the audit
    # log's WAL traffic and a third of its insert cost). seq stays increasing: rows are only ever appended,
    # and a new row's seq is the largest so far plus one. The table is copied once, on the first start.
    """
    CREATE TABLE audit_log_v6 (
        seq INTEGER PRIMARY KEY, insert_id TEXT NOT NULL, timestamp REAL NOT NULL,
        method TEXT NOT NULL, principal TEXT NOT NULL, resource TEXT NOT NULL, denied INTEGER NOT NULL,
        body TEXT NOT NULL);
    INSERT INTO audit_log_v6 SELECT seq, insert_id, timestamp, method, principal, resource, denied, body
        FROM audit_log ORDER BY seq;
    DROP TABLE audit_log;
    ALTER TABLE audit_log_v6 RENAME TO audit_log;
    DELETE FROM sqlite_sequence WHERE name = 'audit_log';
    """,
    # 7: the services each project has enabled (Service Usage). Projects made before keep the APIs keyless served
    # them, and the ones Google enables on a new project.
    """
    CREATE TABLE project_services (project_id TEXT NOT NULL, service TEXT NOT NULL, PRIMARY KEY (project_id, service));
    """ + PROJECT_SERVICES_BACKFILL,
    # 8: the sign-in page: users' passwords, authorization codes, and the refresh tokens signing in gives
    """
    ALTER TABLE users ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';
    CREATE TABLE authorization_codes (
        code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
        code_challenge TEXT NOT NULL, user_id TEXT NOT NULL, scopes TEXT NOT NULL, created_at REAL NOT NULL,
        expires_at REAL NOT NULL, offline INTEGER NOT NULL, nonce TEXT NOT NULL);
    CREATE INDEX authorization_codes_expiry ON authorization_codes (expires_at);
    CREATE TABLE sign_in_grants (
        grant_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, client_id TEXT NOT NULL, scopes TEXT NOT NULL,
        refresh_token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
    CREATE INDEX sign_in_grants_user ON sign_in_grants (user_id);
    """,
    # 9: a code stays until it expires, counting its presentations, with what its first exchange gave (a second
    # presentation revokes that); failed sign-in passwords per user, counted for every process at once
    """
    ALTER TABLE authorization_codes ADD COLUMN redemptions INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE authorization_codes ADD COLUMN grant_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE authorization_codes ADD COLUMN token_hash TEXT NOT NULL DEFAULT '';
    CREATE TABLE sign_in_attempts (subject TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_at REAL NOT NULL);
    CREATE INDEX sign_in_attempts_updated ON sign_in_attempts (updated_at);
    """,
    # 10: workload identity federation: pools, and the providers whose tokens they accept
    """
    CREATE TABLE workload_pools (
        name TEXT PRIMARY KEY, project_number TEXT NOT NULL, display_name TEXT NOT NULL,
        description TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, deleted_at REAL,
        created_at REAL NOT NULL);
    CREATE INDEX workload_pools_project ON workload_pools (project_number, name);
    CREATE TABLE workload_providers (
        name TEXT PRIMARY KEY, pool TEXT NOT NULL, display_name TEXT NOT NULL, description TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0, deleted_at REAL, created_at REAL NOT NULL,
        attribute_mapping TEXT NOT NULL, attribute_condition TEXT NOT NULL, oidc TEXT NOT NULL);
    CREATE INDEX workload_providers_pool ON workload_providers (pool, name);
    """,
    # 11: X.509 workload identity providers: their trust store (anchors and intermediate CAs) as JSON
    """
    ALTER TABLE workload_providers ADD COLUMN x509 TEXT NOT NULL DEFAULT '{}';
    """,
]
# Entries are stored in time order to within this many seconds (concurrent writers, replicas' clocks).
AUDIT_ORDER_SLACK = 60.0

_Record = TypeVar("_Record")
# A sign-in bucket's attempts now (?2 the burst, ?3 now, ?4 per second); a clock behind the last writer's refills
# nothing.
_REFILLED = "min(?2, tokens + max(?3 - updated_at, 0) * ?4)"


@contextlib.contextmanager
def _flocked(fd: int) -> Iterator[None]:
    """The writer lock of a database: the audit writers of every process and the WAL restart take it in
    turns. SQLite's own lock, when taken, makes the others poll with growing sleeps (1, 2, 5, 10 ... ms), and
    two processes committing hundreds of times a second starve each other that way (waits of 100-400 ms were
    seen); a kernel file lock wakes the next writer the moment it is released."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _lower_priority() -> None:
    # Checkpoints are background work: under load they must not take the CPU from the request loops (on two
    # cores a checkpoint at normal priority delayed requests by 5-15 ms).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class SqliteStore:
    CHECKPOINT_INTERVAL = 1.0
    RESTART_FRAMES = 4096  # pages in the WAL (16 MiB) before a checkpoint makes it wrap

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._changes: ChangeCounter | None = None
        self._writer_lock: int | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise NotReady("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        # Checkpoints fsync; run them on a thread of their own rather than inside a request's commit.
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("PRAGMA journal_size_limit=67108864")
        self._db = db
        self.migrate()
        self._changes = ChangeCounter(self.path.with_name(f"{self.path.name}-changes"))
        self._writer_lock = self._open_writer_lock()
        self._checkpointer = asyncio.create_task(self._checkpoint_loop())

    def migrate(self) -> None:
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for index in range(version, len(MIGRATIONS)):
            db.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have migrated meanwhile.
                if db.execute("PRAGMA user_version").fetchone()[0] > index:
                    db.execute("ROLLBACK")
                    continue
                for statement in MIGRATIONS[index].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={index + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        # A file lock beside the database: every process opening this file shares it.
        path = self.path.with_name(f"{self.path.name}.{name}.lock")
        with open(path, "a+") as fh:
            await asyncio.to_thread(fcntl.flock, fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _open_writer_lock(self) -> int:
        return os.open(self.path.with_name(f"{self.path.name}.writer.lock"), os.O_RDWR | os.O_CREAT, 0o600)

    async def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, timeout=2, check_same_thread=False)
        conn.execute("PRAGMA journal_size_limit=67108864")
        writer_lock = self._open_writer_lock()
        loop = asyncio.get_running_loop()
        background = ThreadPoolExecutor(1, "keyless-checkpoint", initializer=_lower_priority)
        # The restart holds the writers' lock: at nice 19 on busy cores the thread holding it waited for a
        # time slice while both processes' commits queued behind it (p99 spikes of 10-20 ms). It runs at
        # normal priority, on a thread of its own.
        restarter = ThreadPoolExecutor(1, "keyless-wal-restart")
        # One process checkpoints at a time (the others would find nothing left to copy).
        checkpointer = os.open(self.path.with_name(f"{self.path.name}.checkpointer.lock"), os.O_RDWR | os.O_CREAT,
                               0o600)
        try:
            while True:
                await asyncio.sleep(self.CHECKPOINT_INTERVAL)
                try:
                    fcntl.flock(checkpointer, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    if await loop.run_in_executor(background, self._copy_back, conn):
                        await loop.run_in_executor(restarter, self._restart, conn, writer_lock)
                except sqlite3.Error:
                    pass  # a busy database is checkpointed next time
                finally:
                    fcntl.flock(checkpointer, fcntl.LOCK_UN)
        finally:
            background.shutdown(wait=True)
            restarter.shutdown(wait=True)
            conn.close()
            os.close(writer_lock)
            os.close(checkpointer)

    def _copy_back(self, conn: sqlite3.Connection) -> bool:
        """Copy the WAL into the database without stopping writers; True when the WAL should now restart.

        PASSIVE never catches up with the end of the WAL under a steady stream of commits, so the WAL never
        wraps and would grow without bound. Once it is large, a second pass copies what arrived during the
        first, and ``_restart`` copies the last few frames and makes the next writer start the WAL from the
        beginning."""
        frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        if frames < self.RESTART_FRAMES:
            return False
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return True

    def _restart(self, conn: sqlite3.Connection, writer_lock: int) -> None:
        # Writers wait only for this step (a few ms, most of it the fsync of the database).
        with _flocked(writer_lock):
            conn.execute("PRAGMA wal_checkpoint(RESTART)")

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            self._checkpointer = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._changes is not None:
            self._changes.close()
            self._changes = None
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    def _record(self, record: Callable[[Row], _Record], sql: str, params: tuple[Any, ...]) -> _Record | None:
        """The record of the one row ``sql`` selects, or None."""
        row = self.db.execute(sql, params).fetchone()
        return record(row) if row is not None else None

    def _insert(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self.db.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def _update_row(self, table: str, key_column: str, key: str, changes: dict[str, Any]) -> None:
        """``UPDATE table SET ... WHERE key_column=key`` for columns already checked with ``check_updatable``."""
        if not changes:
            return
        params = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        try:
            self.db.execute(_SQL.update(table, key_column, changes), (key, *params))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def memo(self) -> dict[Any, Any] | None:
        return None  # remembering needs the read cache, which knows when the state changes

    async def generation(self) -> int:
        # The shared counter, not the meta row: every request asks, and a query costs 5-25 microseconds under
        # load where a memory read costs nothing.
        if self._changes is None:
            raise NotReady("store is not open")
        return self._changes.read()

    async def bump_generation(self) -> None:
        if self._changes is None:
            raise NotReady("store is not open")
        self._changes.increment()  # called after the change itself is committed

    # meta
    async def get_meta(self, key: str) -> str | None:
        row = self.db.execute(_SQL.get_meta, (key,)).fetchone()
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        self.db.execute(_SQL.set_meta, (key, value))

    async def init_meta(self, key: str, value: str) -> str:
        self.db.execute(_SQL.init_meta, (key, value))
        row = self.db.execute(_SQL.get_meta, (key,)).fetchone()
        assert row is not None
        return str(row[0])

    # projects
    async def create_project(self, project: Project) -> None:
        self._insert(_SQL.create_project, project_row(project))

    async def get_project(self, project_id: str) -> Project | None:
        return self._record(as_project, _SQL.get_project, (project_id,))

    async def list_projects(self) -> list[Project]:
        return [as_project(r) for r in self.db.execute(_SQL.list_projects)]

    # service accounts
    async def create_service_account(self, account: ServiceAccount) -> None:
        self._insert(_SQL.create_service_account, service_account_row(account))

    async def get_service_account(self, unique_id: str) -> ServiceAccount | None:
        return self._record(as_service_account, _SQL.get_service_account, (unique_id,))

    async def find_service_account(self, email: str) -> ServiceAccount | None:
        return self._record(as_service_account, _SQL.find_service_account, (email.lower(),))

    async def list_service_accounts(self, project_id: str, *, after_email: str, limit: int) -> list[ServiceAccount]:
        rows = self.db.execute(_SQL.list_service_accounts, (project_id, after_email, limit))
        return [as_service_account(r) for r in rows]

    async def update_service_account(self, unique_id: str, **changes: Any) -> ServiceAccount | None:
        check_updatable(changes, SERVICE_ACCOUNT_UPDATABLE)
        self._update_row("service_accounts", "unique_id", unique_id, changes)
        return await self.get_service_account(unique_id)

    # keys
    async def create_key(self, key: KeyRecord) -> None:
        self._insert(_SQL.create_key, key_row(key))

    async def create_key_within_quota(self, key: KeyRecord, limit: int) -> bool:
        db = self.db
        # The write lock first (IMMEDIATE), so that no other process inserts between the count and the insert.
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(_SQL.count_keys, (key.owner, key.key_type)).fetchone()
            if row[0] >= limit:
                db.execute("ROLLBACK")
                return False
            db.execute(_SQL.create_key, key_row(key))
            db.execute("COMMIT")
            return True
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            raise Conflict(str(exc)) from None
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return self._record(as_key, _SQL.get_key, (key_id,))

    async def list_keys(self, owner: str) -> list[KeyRecord]:
        return [as_key(r) for r in self.db.execute(_SQL.list_keys, (owner,))]

    async def rotate_system_key(self, owner: str, expected_current: list[str], new: KeyRecord) -> bool:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            current = sorted(r[0] for r in db.execute(_SQL.current_system_keys, (owner,)))
            if current != sorted(expected_current):
                db.execute("ROLLBACK")
                return False
            db.execute(_SQL.retire_system_keys, (new.created_at, owner))
            try:
                db.execute(_SQL.create_key, key_row(new))
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                return False
            db.execute("COMMIT")
            return True
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord | None:
        check_updatable(changes, KEY_UPDATABLE)
        self._update_row("keys", "key_id", key_id, changes)
        return await self.get_key(key_id)

    # policies
    async def get_policy(self, resource: str) -> StoredPolicy | None:
        row = self.db.execute(_SQL.get_policy, (resource,)).fetchone()  # every permission check reads policies
        return StoredPolicy(resource, orjson.loads(row[0]), row[1]) if row else None

    async def put_policy(self, resource: str, body: dict[str, Any], etag: str, *, expected_etag: str | None) -> bool:
        text = orjson.dumps(body).decode()
        if expected_etag is None:
            self.db.execute(_SQL.put_policy, (resource, text, etag))
            return True
        if expected_etag == "ACAB":
            cur = self.db.execute(_SQL.create_policy_if_absent, (resource, text, etag))
        else:
            cur = self.db.execute(_SQL.replace_policy_if_etag, (resource, text, etag, expected_etag))
        return cur.rowcount == 1

    async def policies_mentioning(self, text: str) -> list[StoredPolicy]:
        rows = self.db.execute(f"SELECT {POLICY_COLUMNS} FROM policies WHERE instr(body, ?) > 0", (text,))
        return [StoredPolicy(r[0], orjson.loads(r[1]), r[2]) for r in rows]

    async def policy_etags_mentioning(self, text: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT resource, etag FROM policies WHERE instr(body, ?) > 0",
                                                      (text,))]

    # users
    async def create_user(self, user: User) -> None:
        self._insert(_SQL.create_user, user_row(user))

    async def get_user(self, user_id: str) -> User | None:
        return self._record(as_user, _SQL.get_user, (user_id,))

    async def find_user(self, email: str) -> User | None:
        return self._record(as_user, _SQL.find_user, (email.lower(),))

    async def find_user_by_refresh_hash(self, refresh_token_hash: str) -> User | None:
        return self._record(as_user, _SQL.find_user_by_refresh_hash, (refresh_token_hash,))

    async def list_users(self) -> list[User]:
        return [as_user(r) for r in self.db.execute(_SQL.list_users)]

    async def update_user(self, user_id: str, **changes: Any) -> User | None:
        check_updatable(changes, USER_UPDATABLE)
        self._update_row("users", "user_id", user_id, changes)
        return await self.get_user(user_id)

    async def delete_user(self, user_id: str) -> bool:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.execute(_SQL.delete_user, (user_id,)).rowcount == 1
            db.execute(_SQL.delete_grants_of_user, (user_id,))
            db.execute(_SQL.delete_codes_of_user, (user_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return deleted

    # authorization codes and sign-in grants
    async def create_authorization_code(self, code: AuthorizationCode) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_SQL.delete_expired_codes, (code.created_at,))
            db.execute(_SQL.create_code, code_row(code))
            db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            raise Conflict(str(exc)) from None
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def take_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        # One statement: every other connection sees the count it left. fetchall runs the statement to its end,
        # which commits it (autocommit).
        rows = self.db.execute(_SQL.take_code, (code_hash,)).fetchall()
        return as_code(rows[0]) if rows else None

    async def record_code_exchange(self, code_hash: str, grant_id: str, token_hash: str) -> bool:
        return self.db.execute(_SQL.record_code_exchange, (code_hash, grant_id, token_hash)).rowcount == 1

    async def create_sign_in_grant(self, grant: SignInGrant) -> None:
        self._insert(_SQL.create_grant, grant_row(grant))

    async def get_sign_in_grant(self, grant_id: str) -> SignInGrant | None:
        return self._record(as_grant, _SQL.get_grant, (grant_id,))

    async def find_sign_in_grant(self, refresh_token_hash: str) -> SignInGrant | None:
        return self._record(as_grant, _SQL.find_grant, (refresh_token_hash,))

    async def delete_sign_in_grant(self, grant_id: str) -> bool:
        return self.db.execute(_SQL.delete_grant, (grant_id,)).rowcount == 1

    async def delete_sign_in_grants(self, user_id: str) -> int:
        return int(self.db.execute(_SQL.delete_grants_of_user, (user_id,)).rowcount)

    async def take_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> bool:
        db = self.db
        # An untouched bucket is full again after burst / per_second seconds: nothing to remember.
        db.execute("DELETE FROM sign_in_attempts WHERE updated_at < ?", (now - burst / per_second,))
        # One statement, so that of concurrent takers from every process each sees what the others left.
        rows = db.execute(
            "INSERT INTO sign_in_attempts (subject, tokens, updated_at) VALUES (?1, ?2 - 1, ?3) "
            "ON CONFLICT (subject) DO UPDATE SET tokens = " + _REFILLED + " - 1, updated_at = max(updated_at, ?3) "
            "WHERE " + _REFILLED + " >= 1 RETURNING subject", (subject, burst, now, per_second)).fetchall()
        return bool(rows)

    async def refund_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> None:
        self.db.execute("UPDATE sign_in_attempts SET tokens = min(?2, " + _REFILLED + " + 1), "
                        "updated_at = max(updated_at, ?3) WHERE subject = ?1", (subject, burst, now, per_second))

    # groups
    async def set_group(self, group: str, members: list[str]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_SQL.create_group, (group,))
            db.execute(_SQL.delete_group_members, (group,))
            db.executemany(_SQL.add_group_member, [(group, m) for m in members])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def get_group(self, group: str) -> list[str] | None:
        if self.db.execute(_SQL.group_exists, (group,)).fetchone() is None:
            return None
        return [r[0] for r in self.db.execute(_SQL.group_members, (group,))]

    async def list_groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in self.db.execute(_SQL.list_groups)}
        for grp, member in self.db.execute(_SQL.list_group_members):
            out.setdefault(grp, []).append(member)
        return out

    async def delete_group(self, group: str) -> bool:
        self.db.execute(_SQL.delete_group_members, (group,))
        return self.db.execute(_SQL.delete_group, (group,)).rowcount == 1

    async def groups_of(self, member: str) -> list[str]:
        groups = []
        for (group,) in self.db.execute(_SQL.groups_of, (member,)):  # a loop: asked on every caller's first request
            groups.append(group)
        return groups

    # org policies
    async def get_org_policy(self, resource: str, constraint: str) -> OrgPolicy | None:
        return self._record(as_org_policy, _SQL.get_org_policy, (resource, constraint))

    async def put_org_policy(self, policy: OrgPolicy, *, expected_etag: str | None = None) -> bool:
        row = org_policy_row(policy)
        if expected_etag == "ACAB":
            return self.db.execute(_SQL.create_org_policy_if_absent, row).rowcount == 1
        if expected_etag is not None:
            return self.db.execute(_SQL.replace_org_policy_if_etag, (*row, expected_etag)).rowcount == 1
        self.db.execute(_SQL.put_org_policy, row)
        return True

    async def delete_org_policy(self, resource: str, constraint: str) -> bool:
        return self.db.execute(_SQL.delete_org_policy, (resource, constraint)).rowcount == 1

    async def list_org_policies(self, resource: str) -> list[OrgPolicy]:
        return [as_org_policy(r) for r in self.db.execute(_SQL.list_org_policies, (resource,))]

    # services
    async def enable_services(self, project_id: str, services: list[str]) -> None:
        self.db.executemany(_SQL.enable_service, [(project_id, service) for service in services])

    async def disable_service(self, project_id: str, service: str) -> bool:
        return self.db.execute(_SQL.disable_service, (project_id, service)).rowcount == 1

    async def list_enabled_services(self, project_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT service FROM project_services WHERE project_id=? "
                                              "ORDER BY service", (project_id,))]

    # audit
    async def append_audit(self, entries: list[AuditEntry]) -> None:
        if self._writer_lock is None:
            raise NotReady("store is not open")
        # AUDIT_COLUMNS' order; denied as an int, which sqlite3 binds several times faster than a bool (this runs
        # for every credential).
        rows = []
        for e in entries:
            rows.append((e.insert_id, e.timestamp, e.method, e.principal, e.resource, int(e.denied),
                         orjson.dumps(e.body).decode()))
        db = self._db
        assert db is not None  # open, as the writer lock is
        with _flocked(self._writer_lock):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_SQL.append_audit, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    async def prune_audit(self, before: float, limit: int) -> int:
        if self._writer_lock is None:
            raise NotReady("store is not open")
        db = self.db
        with _flocked(self._writer_lock):
            # The oldest `limit` rows, of which those older than `before` (rows are in time order to within
            # AUDIT_ORDER_SLACK, so a slightly younger row among them is left for a later pass).
            cursor = db.execute(
                "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log ORDER BY seq LIMIT ?) "
                "AND timestamp < ? AND seq < (SELECT MAX(seq) FROM audit_log)", (limit, before))
        return int(cursor.rowcount)

    def _first_seq_since(self, since: float) -> int:
        """The first seq whose entry is at or after ``since``, by binary search on the primary key (entries are
        stored in time order, to within AUDIT_ORDER_SLACK: callers filter on the timestamp too)."""
        low, high = self.db.execute("SELECT MIN(seq), MAX(seq) FROM audit_log").fetchone()
        if low is None:
            return 0
        found = high + 1
        while low <= high:
            middle = (low + high) // 2
            seq, timestamp = self.db.execute("SELECT seq, timestamp FROM audit_log WHERE seq >= ? ORDER BY seq "
                                             "LIMIT 1", (middle,)).fetchone()
            if timestamp >= since:
                found, high = seq, middle - 1
            else:
                low = seq + 1
        return int(found)

    async def query_audit(self, query: AuditQuery) -> list[AuditEntry]:
        after = query.after_seq
        if query.since is not None:
            after = max(after, self._first_seq_since(query.since - AUDIT_ORDER_SLACK) - 1)
        clauses = ["seq > ?"]
        params: list[Any] = [after]
        if query.before_seq is not None:
            clauses.append("seq < ?")
            params.append(query.before_seq)
        for column, value in (("principal", query.principal), ("method", query.method)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.resource is not None:
            clauses.append("(resource = ? OR substr(resource, 1, ?) = ?)")
            params.extend([query.resource, len(query.resource) + 1, query.resource + "/"])
        if query.since is not None:
            clauses.append("timestamp >= ?")
            params.append(query.since)
        if query.denied is not None:
            clauses.append("denied = ?")
            params.append(int(query.denied))
        rows = self.db.execute(
            f"SELECT seq, {AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(clauses)} "
            f"ORDER BY seq{' DESC' if query.newest_first else ''} LIMIT ?", (*params, query.limit))
        return [as_audit_entry(r) for r in rows]

    # revocation
    async def revoke_token(self, token_hash: str, expires_at: float) -> None:
        self.db.execute(_SQL.revoke_token, (token_hash, expires_at))

    async def is_token_revoked(self, token_hash: str) -> bool:
        return self.db.execute(_SQL.is_token_revoked, (token_hash,)).fetchone() is not None

    # workload identity pools and providers
    async def create_workload_pool(self, pool: WorkloadPool) -> None:
        self._insert(_SQL.create_workload_pool, workload_pool_row(pool))

    async def get_workload_pool(self, name: str) -> WorkloadPool | None:
        return self._record(as_workload_pool, _SQL.get_workload_pool, (name,))

    async def list_workload_pools(self, project_number: str) -> list[WorkloadPool]:
        return [as_workload_pool(r) for r in self.db.execute(_SQL.list_workload_pools, (project_number,))]

    async def update_workload_pool(self, name: str, **changes: Any) -> WorkloadPool | None:
        check_updatable(changes, WORKLOAD_POOL_UPDATABLE)
        self._update_row("workload_pools", "name", name, changes)
        return await self.get_workload_pool(name)

    async def create_workload_provider(self, provider: WorkloadProvider) -> None:
        self._insert(_SQL.create_workload_provider, workload_provider_row(provider))

    async def get_workload_provider(self, name: str) -> WorkloadProvider | None:
        return self._record(as_workload_provider, _SQL.get_workload_provider, (name,))

    async def list_workload_providers(self, pool: str) -> list[WorkloadProvider]:
        return [as_workload_provider(r) for r in self.db.execute(_SQL.list_workload_providers, (pool,))]

    async def update_workload_provider(self, name: str, **changes: Any) -> WorkloadProvider | None:
        check_updatable(changes, WORKLOAD_PROVIDER_UPDATABLE)
        self._update_row("workload_providers", "name", name, stored_changes(changes))
        return await self.get_workload_provider(name)

    async def list_x509_providers(self) -> list[WorkloadProvider]:
        return [as_workload_provider(r) for r in self.db.execute(_SQL.list_x509_providers)]
