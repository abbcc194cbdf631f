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
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from keyless.errors import NotReady
from keyless.storage.base import (
    KEY_UPDATABLE,
    SERVICE_ACCOUNT_UPDATABLE,
    USER_UPDATABLE,
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
    check_updatable,
)
from keyless.storage.changes import ChangeCounter
from keyless.storage.migrations import PROJECT_SERVICES_BACKFILL

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
]
# Entries are stored in time order to within this many seconds (concurrent writers, replicas' clocks).
AUDIT_ORDER_SLACK = 60.0

_SA_COLS = ("unique_id, project_id, account_id, email, display_name, description, disabled, deleted_at, created_at, "
            "tokens_valid_after")
_KEY_COLS = ("key_id, owner, key_type, key_origin, certificate_pem, private_key_enc, valid_after, valid_before, "
             "created_at, disabled, retired_at, deleted_at")
_USER_COLS = ("user_id, email, client_id, client_secret_hash, refresh_token_hash, created_at, disabled, "
              "password_hash")
_CODE_COLS = ("code_hash, client_id, redirect_uri, code_challenge, user_id, scopes, created_at, expires_at, offline, "
              "nonce")
_GRANT_COLS = "grant_id, user_id, client_id, scopes, refresh_token_hash, created_at"


def _sa(row: tuple[Any, ...] | None) -> ServiceAccount | None:
    if row is None:
        return None
    return ServiceAccount(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7], row[8], row[9])


def _key(row: tuple[Any, ...] | None) -> KeyRecord | None:
    if row is None:
        return None
    return KeyRecord(row[0], row[1], row[2], row[3], bytes(row[4]), bytes(row[5]) if row[5] is not None else None,
                     row[6], row[7], row[8], bool(row[9]), row[10], row[11])


def _user(row: tuple[Any, ...] | None) -> User | None:
    if row is None:
        return None
    return User(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7])


def _code(row: tuple[Any, ...] | None) -> AuthorizationCode | None:
    if row is None:
        return None
    return AuthorizationCode(row[0], row[1], row[2], row[3], row[4], tuple(row[5].split()), row[6], row[7],
                             bool(row[8]), row[9])


def _grant(row: tuple[Any, ...] | None) -> SignInGrant | None:
    if row is None:
        return None
    return SignInGrant(row[0], row[1], row[2], tuple(row[3].split()), row[4], row[5])


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

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.db.execute(sql, params).fetchone()
        return row

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
        row = self._one("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    async def init_meta(self, key: str, value: str) -> str:
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
        row = self._one("SELECT value FROM meta WHERE key=?", (key,))
        assert row is not None
        return str(row[0])

    # projects
    async def create_project(self, project: Project) -> None:
        try:
            self.db.execute("INSERT INTO projects (project_id, number, created_at) VALUES (?, ?, ?)",
                            (project.project_id, project.number, project.created_at))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def get_project(self, project_id: str) -> Project | None:
        row = self._one("SELECT project_id, number, created_at FROM projects WHERE project_id=? OR number=?",
                        (project_id, project_id))
        return Project(*row) if row else None

    async def list_projects(self) -> list[Project]:
        return [Project(*r) for r in self.db.execute(
            "SELECT project_id, number, created_at FROM projects ORDER BY project_id")]

    # service accounts
    async def create_service_account(self, account: ServiceAccount) -> None:
        try:
            self.db.execute(
                f"INSERT INTO service_accounts ({_SA_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (account.unique_id, account.project_id, account.account_id, account.email, account.display_name,
                 account.description, int(account.disabled), account.deleted_at, account.created_at,
                 account.tokens_valid_after))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def get_service_account(self, unique_id: str) -> ServiceAccount | None:
        return _sa(self._one(f"SELECT {_SA_COLS} FROM service_accounts WHERE unique_id=?", (unique_id,)))

    async def find_service_account(self, email: str) -> ServiceAccount | None:
        return _sa(self._one(f"SELECT {_SA_COLS} FROM service_accounts WHERE email=? AND deleted_at IS NULL",
                             (email.lower(),)))

    async def list_service_accounts(self, project_id: str, *, after_email: str, limit: int) -> list[ServiceAccount]:
        rows = self.db.execute(
            f"SELECT {_SA_COLS} FROM service_accounts WHERE project_id=? AND deleted_at IS NULL AND email>? "
            "ORDER BY email LIMIT ?", (project_id, after_email, limit))
        return [a for a in map(_sa, rows) if a is not None]

    def _update_row(self, table: str, key_column: str, key: str, changes: dict[str, Any]) -> None:
        """``UPDATE table SET ... WHERE key_column=key`` for columns already checked with ``check_updatable``."""
        if not changes:
            return
        sets = ", ".join(f"{k}=?" for k in changes)
        params = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        try:
            self.db.execute(f"UPDATE {table} SET {sets} WHERE {key_column}=?", (*params, key))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def update_service_account(self, unique_id: str, **changes: Any) -> ServiceAccount | None:
        check_updatable(changes, SERVICE_ACCOUNT_UPDATABLE)
        self._update_row("service_accounts", "unique_id", unique_id, changes)
        return await self.get_service_account(unique_id)

    # keys
    async def create_key(self, key: KeyRecord) -> None:
        try:
            self._insert_key(key)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def create_key_within_quota(self, key: KeyRecord, limit: int) -> bool:
        db = self.db
        # The write lock first (IMMEDIATE), so that no other process inserts between the count and the insert.
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT count(*) FROM keys WHERE owner=? AND key_type=? AND deleted_at IS NULL",
                             (key.owner, key.key_type)).fetchone()
            if row[0] >= limit:
                db.execute("ROLLBACK")
                return False
            self._insert_key(key)
            db.execute("COMMIT")
            return True
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            raise Conflict(str(exc)) from None
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert_key(self, key: KeyRecord) -> None:
        self.db.execute(
            f"INSERT INTO keys ({_KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.key_id, key.owner, key.key_type, key.key_origin, key.certificate_pem, key.private_key_enc,
             key.valid_after, key.valid_before, key.created_at, int(key.disabled), key.retired_at, key.deleted_at))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return _key(self._one(f"SELECT {_KEY_COLS} FROM keys WHERE key_id=? AND deleted_at IS NULL", (key_id,)))

    async def list_keys(self, owner: str) -> list[KeyRecord]:
        rows = self.db.execute(f"SELECT {_KEY_COLS} FROM keys WHERE owner=? AND deleted_at IS NULL "
                               "ORDER BY created_at, key_id", (owner,))
        return [k for k in map(_key, rows) if k is not None]

    async def rotate_system_key(self, owner: str, expected_current: list[str], new: KeyRecord) -> bool:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            current = sorted(r[0] for r in db.execute(
                "SELECT key_id FROM keys WHERE owner=? AND key_type='SYSTEM_MANAGED' AND retired_at IS NULL "
                "AND deleted_at IS NULL", (owner,)))
            if current != sorted(expected_current):
                db.execute("ROLLBACK")
                return False
            db.execute("UPDATE keys SET retired_at=? WHERE owner=? AND key_type='SYSTEM_MANAGED' "
                       "AND retired_at IS NULL", (new.created_at, owner))
            try:
                self._insert_key(new)
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
        row = self._one("SELECT body, etag FROM policies WHERE resource=?", (resource,))
        return StoredPolicy(resource, orjson.loads(row[0]), row[1]) if row else None

    async def put_policy(self, resource: str, body: dict[str, Any], etag: str, *, expected_etag: str | None) -> bool:
        text = orjson.dumps(body).decode()
        if expected_etag is None:
            self.db.execute("INSERT INTO policies (resource, body, etag) VALUES (?, ?, ?) ON CONFLICT(resource) "
                            "DO UPDATE SET body=excluded.body, etag=excluded.etag", (resource, text, etag))
            return True
        if expected_etag == "ACAB":
            cur = self.db.execute("INSERT OR IGNORE INTO policies (resource, body, etag) VALUES (?, ?, ?)",
                                  (resource, text, etag))
        else:
            cur = self.db.execute("UPDATE policies SET body=?, etag=? WHERE resource=? AND etag=?",
                                  (text, etag, resource, expected_etag))
        return cur.rowcount == 1

    async def policies_mentioning(self, text: str) -> list[StoredPolicy]:
        rows = self.db.execute("SELECT resource, body, etag FROM policies WHERE instr(body, ?) > 0", (text,))
        return [StoredPolicy(r[0], orjson.loads(r[1]), r[2]) for r in rows]

    # users
    async def create_user(self, user: User) -> None:
        try:
            self.db.execute(f"INSERT INTO users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (user.user_id, user.email, user.client_id, user.client_secret_hash,
                             user.refresh_token_hash, user.created_at, int(user.disabled), user.password_hash))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def get_user(self, user_id: str) -> User | None:
        return _user(self._one(f"SELECT {_USER_COLS} FROM users WHERE user_id=?", (user_id,)))

    async def find_user(self, email: str) -> User | None:
        return _user(self._one(f"SELECT {_USER_COLS} FROM users WHERE email=?", (email.lower(),)))

    async def find_user_by_refresh_hash(self, refresh_token_hash: str) -> User | None:
        return _user(self._one(f"SELECT {_USER_COLS} FROM users WHERE refresh_token_hash=?", (refresh_token_hash,)))

    async def list_users(self) -> list[User]:
        return [u for u in map(_user, self.db.execute(f"SELECT {_USER_COLS} FROM users ORDER BY email"))
                if u is not None]

    async def update_user(self, user_id: str, **changes: Any) -> User | None:
        check_updatable(changes, USER_UPDATABLE)
        self._update_row("users", "user_id", user_id, changes)
        return await self.get_user(user_id)

    async def delete_user(self, user_id: str) -> bool:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.execute("DELETE FROM users WHERE user_id=?", (user_id,)).rowcount == 1
            db.execute("DELETE FROM sign_in_grants WHERE user_id=?", (user_id,))
            db.execute("DELETE FROM authorization_codes WHERE user_id=?", (user_id,))
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
            db.execute("DELETE FROM authorization_codes WHERE expires_at < ?", (code.created_at,))
            db.execute(f"INSERT INTO authorization_codes ({_CODE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (code.code_hash, code.client_id, code.redirect_uri, code.code_challenge, code.user_id,
                        " ".join(code.scopes), code.created_at, code.expires_at, int(code.offline), code.nonce))
            db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            raise Conflict(str(exc)) from None
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def take_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        # One statement: the row is gone for every other connection the moment one of them has it. fetchall runs
        # the statement to its end, which commits it (autocommit).
        rows = self.db.execute(f"DELETE FROM authorization_codes WHERE code_hash=? RETURNING {_CODE_COLS}",
                               (code_hash,)).fetchall()
        return _code(rows[0]) if rows else None

    async def create_sign_in_grant(self, grant: SignInGrant) -> None:
        try:
            self.db.execute(f"INSERT INTO sign_in_grants ({_GRANT_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                            (grant.grant_id, grant.user_id, grant.client_id, " ".join(grant.scopes),
                             grant.refresh_token_hash, grant.created_at))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def get_sign_in_grant(self, grant_id: str) -> SignInGrant | None:
        return _grant(self._one(f"SELECT {_GRANT_COLS} FROM sign_in_grants WHERE grant_id=?", (grant_id,)))

    async def find_sign_in_grant(self, refresh_token_hash: str) -> SignInGrant | None:
        return _grant(self._one(f"SELECT {_GRANT_COLS} FROM sign_in_grants WHERE refresh_token_hash=?",
                                (refresh_token_hash,)))

    async def delete_sign_in_grant(self, grant_id: str) -> bool:
        return self.db.execute("DELETE FROM sign_in_grants WHERE grant_id=?", (grant_id,)).rowcount == 1

    async def delete_sign_in_grants(self, user_id: str) -> int:
        return int(self.db.execute("DELETE FROM sign_in_grants WHERE user_id=?", (user_id,)).rowcount)

    # groups
    async def set_group(self, group: str, members: list[str]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR IGNORE INTO groups (grp) VALUES (?)", (group,))
            db.execute("DELETE FROM group_members WHERE grp=?", (group,))
            db.executemany("INSERT OR IGNORE INTO group_members (grp, member) VALUES (?, ?)",
                           [(group, m) for m in members])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def get_group(self, group: str) -> list[str] | None:
        if self._one("SELECT 1 FROM groups WHERE grp=?", (group,)) is None:
            return None
        return [r[0] for r in self.db.execute("SELECT member FROM group_members WHERE grp=? ORDER BY member",
                                              (group,))]

    async def list_groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in self.db.execute("SELECT grp FROM groups ORDER BY grp")}
        for grp, member in self.db.execute("SELECT grp, member FROM group_members ORDER BY grp, member"):
            out.setdefault(grp, []).append(member)
        return out

    async def delete_group(self, group: str) -> bool:
        self.db.execute("DELETE FROM group_members WHERE grp=?", (group,))
        return self.db.execute("DELETE FROM groups WHERE grp=?", (group,)).rowcount == 1

    async def groups_of(self, member: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT grp FROM group_members WHERE member=?", (member,))]

    # org policies
    async def get_org_policy(self, resource: str, constraint: str) -> OrgPolicy | None:
        row = self._one("SELECT resource, constraint_name, spec, etag, updated_at FROM org_policies "
                        "WHERE resource=? AND constraint_name=?", (resource, constraint))
        return OrgPolicy(row[0], row[1], orjson.loads(row[2]), row[3], row[4]) if row else None

    async def put_org_policy(self, policy: OrgPolicy, *, expected_etag: str | None = None) -> bool:
        spec = orjson.dumps(policy.spec).decode()
        if expected_etag == "ACAB":
            return self.db.execute(
                "INSERT INTO org_policies (resource, constraint_name, spec, etag, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(resource, constraint_name) DO NOTHING",
                (policy.resource, policy.constraint, spec, policy.etag, policy.updated_at)).rowcount == 1
        if expected_etag is not None:
            return self.db.execute(
                "UPDATE org_policies SET spec=?, etag=?, updated_at=? WHERE resource=? AND constraint_name=? "
                "AND etag=?",
                (spec, policy.etag, policy.updated_at, policy.resource, policy.constraint, expected_etag)).rowcount == 1
        self.db.execute(
            "INSERT INTO org_policies (resource, constraint_name, spec, etag, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(resource, constraint_name) DO UPDATE SET spec=excluded.spec, etag=excluded.etag, "
            "updated_at=excluded.updated_at",
            (policy.resource, policy.constraint, spec, policy.etag, policy.updated_at))
        return True

    async def delete_org_policy(self, resource: str, constraint: str) -> bool:
        return self.db.execute("DELETE FROM org_policies WHERE resource=? AND constraint_name=?",
                               (resource, constraint)).rowcount == 1

    async def list_org_policies(self, resource: str) -> list[OrgPolicy]:
        rows = self.db.execute("SELECT resource, constraint_name, spec, etag, updated_at FROM org_policies "
                               "WHERE resource=? ORDER BY constraint_name", (resource,))
        return [OrgPolicy(r[0], r[1], orjson.loads(r[2]), r[3], r[4]) for r in rows]

    # services
    async def enable_services(self, project_id: str, services: list[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO project_services (project_id, service) VALUES (?, ?)",
                            [(project_id, service) for service in services])

    async def disable_service(self, project_id: str, service: str) -> bool:
        return self.db.execute("DELETE FROM project_services WHERE project_id=? AND service=?",
                               (project_id, service)).rowcount == 1

    async def list_enabled_services(self, project_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT service FROM project_services WHERE project_id=? "
                                              "ORDER BY service", (project_id,))]

    # audit
    async def append_audit(self, entries: list[AuditEntry]) -> None:
        if self._writer_lock is None:
            raise NotReady("store is not open")
        rows = [(e.insert_id, e.timestamp, e.method, e.principal, e.resource, int(e.denied),
                 orjson.dumps(e.body).decode()) for e in entries]
        db = self.db
        with _flocked(self._writer_lock):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO audit_log (insert_id, timestamp, method, principal, resource, denied, "
                               "body) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
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
            "SELECT seq, insert_id, timestamp, method, principal, resource, denied, body FROM audit_log "
            f"WHERE {' AND '.join(clauses)} ORDER BY seq{' DESC' if query.newest_first else ''} LIMIT ?",
            (*params, query.limit))
        return [AuditEntry(r[1], r[2], r[3], r[4], r[5], bool(r[6]), orjson.loads(r[7]), r[0]) for r in rows]

    # revocation
    async def revoke_token(self, token_hash: str, expires_at: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO revoked_tokens (token_hash, expires_at) VALUES (?, ?)",
                        (token_hash, expires_at))

    async def is_token_revoked(self, token_hash: str) -> bool:
        return self._one("SELECT 1 FROM revoked_tokens WHERE token_hash=?", (token_hash,)) is not None
