"""PostgreSQL backend (asyncpg): the system of record for several stateless replicas.

Every read goes to the database, or to the read cache in front of the store, which every replica drops when the
state generation moves: a change made through one replica is enforced by its own processes at once and by every
other replica within ``notify.MAX_STALENESS`` (the generation is learnt through LISTEN/NOTIFY, ``notify.py``).
Compare-and-swap writes (policies, key rotation) rely on row locks and a partial unique index, not on
process-local state.

A database that is down, unreachable, read-only (a standby, during a failover) or slow is the caller's
``Unavailable`` (503), never an asyncpg exception: every operation is bounded by ``OPERATION_TIMEOUT`` and its
failures are mapped here. The pool drops its connections after such a failure, so the next operation connects
again, to whichever host of a multi-host URL then accepts writes (``target_session_attrs=read-write``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson

from keyless.errors import NotReady, Unavailable
from keyless.storage import notify
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
from keyless.storage.rows import POSTGRES as _SQL

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE projects (project_id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE,
                           created_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE service_accounts (
        unique_id TEXT PRIMARY KEY, project_id TEXT NOT NULL, account_id TEXT NOT NULL, email TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '',
        disabled BOOLEAN NOT NULL DEFAULT FALSE, deleted_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL);
    CREATE UNIQUE INDEX service_accounts_active_email ON service_accounts (email) WHERE deleted_at IS NULL;
    CREATE INDEX service_accounts_project ON service_accounts (project_id, email);
    CREATE TABLE keys (
        key_id TEXT PRIMARY KEY, owner TEXT NOT NULL, key_type TEXT NOT NULL, key_origin TEXT NOT NULL,
        certificate_pem BYTEA NOT NULL, private_key_enc BYTEA, valid_after DOUBLE PRECISION NOT NULL,
        valid_before DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE, retired_at DOUBLE PRECISION, deleted_at DOUBLE PRECISION);
    CREATE INDEX keys_owner ON keys (owner, created_at);
    CREATE TABLE policies (resource TEXT PRIMARY KEY, body TEXT NOT NULL, etag TEXT NOT NULL);
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, client_id TEXT NOT NULL UNIQUE,
        client_secret_hash TEXT NOT NULL, refresh_token_hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL, disabled BOOLEAN NOT NULL DEFAULT FALSE);
    CREATE TABLE groups (grp TEXT PRIMARY KEY);
    CREATE TABLE group_members (grp TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (grp, member));
    CREATE INDEX group_members_member ON group_members (member);
    CREATE TABLE org_policies (
        resource TEXT NOT NULL, constraint_name TEXT NOT NULL, spec TEXT NOT NULL, etag TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (resource, constraint_name));
    CREATE TABLE revoked_tokens (token_hash TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL);
    """,
    # 2: tokens minted before an account was deleted stay dead after it is undeleted
    """
    ALTER TABLE service_accounts ADD COLUMN tokens_valid_after DOUBLE PRECISION NOT NULL DEFAULT 0;
    """,
    # 3: the audit log; at most one system-managed key in force per owner (key rotation happens once)
    """
    CREATE TABLE audit_log (
        seq BIGSERIAL PRIMARY KEY, insert_id TEXT NOT NULL, timestamp DOUBLE PRECISION NOT NULL,
        method TEXT NOT NULL, principal TEXT NOT NULL, resource TEXT NOT NULL, denied BOOLEAN NOT NULL,
        body TEXT NOT NULL);
    CREATE INDEX audit_log_time ON audit_log (timestamp);
    CREATE INDEX audit_log_principal ON audit_log (principal, seq);
    CREATE INDEX audit_log_resource ON audit_log (resource, seq);
    CREATE UNIQUE INDEX keys_one_current_system_key ON keys (owner)
        WHERE key_type = 'SYSTEM_MANAGED' AND retired_at IS NULL AND deleted_at IS NULL;
    """,
    # 4: the services each project has enabled (Service Usage). Projects made before keep the APIs keyless served
    # them, and the ones Google enables on a new project.
    """
    CREATE TABLE project_services (project_id TEXT NOT NULL, service TEXT NOT NULL, PRIMARY KEY (project_id, service));
    """ + PROJECT_SERVICES_BACKFILL,
    # 5: the sign-in page: users' passwords, authorization codes, and the refresh tokens signing in gives
    """
    ALTER TABLE users ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';
    CREATE TABLE authorization_codes (
        code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
        code_challenge TEXT NOT NULL, user_id TEXT NOT NULL, scopes TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, offline BOOLEAN NOT NULL,
        nonce TEXT NOT NULL);
    CREATE INDEX authorization_codes_expiry ON authorization_codes (expires_at);
    CREATE TABLE sign_in_grants (
        grant_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, client_id TEXT NOT NULL, scopes TEXT NOT NULL,
        refresh_token_hash TEXT NOT NULL UNIQUE, created_at DOUBLE PRECISION NOT NULL);
    CREATE INDEX sign_in_grants_user ON sign_in_grants (user_id);
    """,
    # 6: a code stays until it expires, counting its presentations, with what its first exchange gave (a second
    # presentation revokes that); failed sign-in passwords per user, counted for every replica at once
    """
    ALTER TABLE authorization_codes ADD COLUMN redemptions INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE authorization_codes ADD COLUMN grant_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE authorization_codes ADD COLUMN token_hash TEXT NOT NULL DEFAULT '';
    CREATE TABLE sign_in_attempts (
        subject TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
    CREATE INDEX sign_in_attempts_updated ON sign_in_attempts (updated_at);
    """,
    # 7: workload identity federation: pools, and the providers whose tokens they accept
    """
    CREATE TABLE workload_pools (
        name TEXT PRIMARY KEY, project_number TEXT NOT NULL, display_name TEXT NOT NULL,
        description TEXT NOT NULL, disabled BOOLEAN NOT NULL DEFAULT FALSE, deleted_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL);
    CREATE INDEX workload_pools_project ON workload_pools (project_number, name);
    CREATE TABLE workload_providers (
        name TEXT PRIMARY KEY, pool TEXT NOT NULL, display_name TEXT NOT NULL, description TEXT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE, deleted_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL,
        attribute_mapping TEXT NOT NULL, attribute_condition TEXT NOT NULL, oidc TEXT NOT NULL);
    CREATE INDEX workload_providers_pool ON workload_providers (pool, name);
    """,
    # 8: X.509 workload identity providers: their trust store (anchors and intermediate CAs) as JSON
    """
    ALTER TABLE workload_providers ADD COLUMN x509 TEXT NOT NULL DEFAULT '{}';
    """,
]

# A sign-in bucket's attempts now ($2 the burst, $3 now, $4 per second); a clock behind the last writer's refills
# nothing.
_REFILLED = ("LEAST($2::float8, sign_in_attempts.tokens + GREATEST($3::float8 - sign_in_attempts.updated_at, 0) "
             "* $4::float8)")


def _count(status: str) -> int:
    """Rows affected, from asyncpg's status string ("UPDATE 1", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[1])


def _lock_id(name: str) -> int:
    return zlib.crc32(f"keyless:{name}".encode())


log = logging.getLogger("keyless.storage")

# The longest one store operation may take, waiting for a pooled connection, connecting and querying included,
# before it fails as Unavailable: a request whose database does not answer is answered 503 after that. A query
# (and a connection attempt) times out a little earlier, so that the operation's deadline cuts the wait for the
# query's cancellation; that cancellation goes on in the background, bounded by the query timeout again (then the
# connection is closed). An operation whose query began late, after waiting for a connection, may so take up to
# OPERATION_TIMEOUT + QUERY_TIMEOUT.
OPERATION_TIMEOUT = 5.0
QUERY_TIMEOUT = 4.0
LOCK_TIMEOUT = 60.0  # taking a lock another process holds (``lock``)

# What a database that cannot serve looks like through asyncpg: refused, reset or timed-out connections (OSError,
# TimeoutError), connection-class and operator-intervention SQLSTATEs (08xxx; 57xxx: shutting down, starting up,
# in recovery, cancelled), too many connections (53xxx), a read-only transaction (25006: connected to a standby,
# or to a primary since demoted), a connection closed or terminated under us (InterfaceError; InternalClientError,
# also when no host of a multi-host URL accepts writes).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError, asyncpg.ReadOnlySQLTransactionError, asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

_Store = TypeVar("_Store", bound="type[PostgresStore]")
_Record = TypeVar("_Record")
# Start-up and shutdown: no deadline, errors as they are. ``generation`` is answered from memory when it can be and
# guards its query itself (``_read_generation``): a deadline costs a timer per request.
_NOT_GUARDED = frozenset({"open", "close", "migrate", "generation"})


def _guard(operation: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(operation)
    async def guarded(self: PostgresStore, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation(self, *args, **kwargs)
        except _UNAVAILABLE as exc:
            await self._unavailable(exc)
            raise Unavailable() from None
        if self._down:
            self._down = False
            log.warning("database available again")
        return result

    return guarded


def _attached(conn: Any) -> bool:
    """Whether a connection lent by the pool is still ours and open: when its server connection closes (a failover,
    a terminated backend) asyncpg takes it back by itself, and every method of it then raises InterfaceError."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def _keep_session(conn: asyncpg.Connection) -> None:
    """How a pooled connection is reset when it goes back to the pool: not at all. asyncpg's default reset is a
    query (UNLISTEN, CLOSE ALL, RESET ALL, advisory unlock) on every release, two per request; keyless changes no
    session state on pooled connections (no SET, LISTEN or cursors), and ``lock`` drops a connection whose advisory
    lock it could not release instead of handing it back."""


def _guard_operations(cls: _Store) -> _Store:
    """Every store operation (any public coroutine method, also those added later) is bounded in time and raises
    ``Unavailable`` for a database that cannot serve."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and name not in _NOT_GUARDED and inspect.iscoroutinefunction(member):
            setattr(cls, name, _guard(member))
    return cls


@_guard_operations
class PostgresStore:
    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10,
                 timeout: float = OPERATION_TIMEOUT, query_timeout: float = QUERY_TIMEOUT,
                 changes: Path | None = None) -> None:
        """``changes``: a change-counter file shared by this replica's processes (its data dir, ``--workers N``),
        so that a change made by one is seen by the others at once rather than within the propagation bound."""
        self.dsn = dsn
        self._changes_path = changes
        self._changes: ChangeCounter | None = None
        self._watch: notify.GenerationWatch | None = None
        self._audit_conn: Any = None  # a pooled connection held for append_audit
        self._audit_busy = False
        self._min = min_size
        self._max = max_size
        self.timeout = timeout
        self.query_timeout = query_timeout
        self._pool: asyncpg.Pool | None = None
        self._down = False

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise NotReady("store is not open")
        return self._pool

    async def open(self) -> None:
        # asyncpg logs each failed attempt to refill the pool with a traceback; keyless logs an outage once.
        logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
        # ``timeout`` bounds a connection attempt (every host of a multi-host URL together); ``command_timeout`` a
        # query, and the cancellation of one that timed out (a connection whose server stopped answering is then
        # closed instead of waited for).
        self._pool = await asyncpg.create_pool(self.dsn, min_size=self._min, max_size=self._max,
                                               timeout=self.query_timeout, command_timeout=self.query_timeout,
                                               reset=_keep_session)
        await self.migrate()
        if self._changes_path is not None:
            self._changes = ChangeCounter(self._changes_path)
        self._watch = notify.GenerationWatch(self._connect_watch)
        self._watch.start()

    async def _connect_watch(self) -> asyncpg.Connection:
        # The same URL as the pool (with a multi-host URL, the host that accepts writes), named in pg_stat_activity.
        return await asyncpg.connect(self.dsn, timeout=self.query_timeout,
                                     server_settings={"application_name": notify.APPLICATION_NAME})

    async def _unavailable(self, exc: BaseException) -> None:
        """After a failure of the database: replace every pooled connection (a connection may be stuck on a host
        that stopped answering, or be on a standby), and log the outage once, by kind, never its text."""
        if self._pool is not None:
            await self._pool.expire_connections()
            if not self._audit_busy:
                await self._drop_audit_connection()
        if not self._down:
            self._down = True
            log.warning("database unavailable (%s): requests are answered 503 until it is back", type(exc).__name__)

    async def migrate(self) -> None:
        # A connection of its own, without the pool's query timeout: a migration may take long on a big database.
        conn = await asyncpg.connect(self.dsn, timeout=self.query_timeout)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", _lock_id("migrate"))
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for index, script in enumerate(MIGRATIONS, start=1):
                    if index in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(script)
                        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", index)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _lock_id("migrate"))
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        if self._changes is not None:
            self._changes.close()
            self._changes = None
        if self._audit_conn is not None:
            with contextlib.suppress(*_UNAVAILABLE):
                await self.pool.release(self._audit_conn)  # the pool waits for every connection it lent
            self._audit_conn = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        try:
            # Taking it waits while another process holds it (a replica bootstrapping): longer than an operation.
            async with asyncio.timeout(LOCK_TIMEOUT):
                conn = await self.pool.acquire()
                try:
                    await conn.execute("SELECT pg_advisory_lock($1)", _lock_id(name), timeout=LOCK_TIMEOUT)
                except BaseException:
                    await self._discard(conn)  # whether the lock was taken is unknown: the session goes, and the lock
                    raise
        except _UNAVAILABLE as exc:
            await self._unavailable(exc)
            raise Unavailable() from None
        try:
            yield  # what runs under the lock raises its own errors, mapped by the operations it calls
        finally:
            try:
                async with asyncio.timeout(self.timeout):
                    await conn.execute("SELECT pg_advisory_unlock($1)", _lock_id(name))
            except _UNAVAILABLE:
                await self._discard(conn)  # a session lock ends with its connection (pooled ones are not reset)
            else:
                with contextlib.suppress(*_UNAVAILABLE):
                    await self.pool.release(conn)

    async def memo(self) -> dict[Any, Any] | None:
        return None  # remembering needs the read cache, which knows when the state changes

    async def generation(self) -> int:
        """The database's counter and server (``notify``), from memory while the generation watch vouches for
        it, else read; above them this replica's own change counter, which its processes move at once."""
        shared = self._watch.current() if self._watch is not None else None
        if shared is None:
            shared = await self._read_generation()
        return shared + (self._changes.read() << 128 if self._changes is not None else 0)

    @_guard
    async def _read_generation(self) -> int:
        return notify.generation_of(await self.pool.fetchrow(notify.READ))

    async def bump_generation(self) -> None:
        if self._changes is not None:
            self._changes.increment()  # this replica's other processes: at once, whatever the database says
        counter, _ = await self.pool.fetchrow(notify.BUMP)
        if self._watch is not None:
            self._watch.saw(int(counter))

    async def _record(self, record: Callable[[Row], _Record], sql: str, *args: Any) -> _Record | None:
        """The record of the one row ``sql`` selects, or None."""
        row = await self.pool.fetchrow(sql, *args)
        return record(row) if row is not None else None

    async def _insert(self, sql: str, row: tuple[Any, ...]) -> None:
        try:
            await self.pool.execute(sql, *row)
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(str(exc)) from None

    # meta
    async def get_meta(self, key: str) -> str | None:
        value: str | None = await self.pool.fetchval(_SQL.get_meta, key)
        return value

    async def set_meta(self, key: str, value: str) -> None:
        await self.pool.execute(_SQL.set_meta, key, value)

    async def init_meta(self, key: str, value: str) -> str:
        await self.pool.execute(_SQL.init_meta, key, value)
        return str(await self.pool.fetchval(_SQL.get_meta, key))

    # projects
    async def create_project(self, project: Project) -> None:
        await self._insert(_SQL.create_project, project_row(project))

    async def get_project(self, project_id: str) -> Project | None:
        return await self._record(as_project, _SQL.get_project, project_id)

    async def list_projects(self) -> list[Project]:
        return [as_project(r) for r in await self.pool.fetch(_SQL.list_projects)]

    # service accounts
    async def create_service_account(self, account: ServiceAccount) -> None:
        await self._insert(_SQL.create_service_account, service_account_row(account))

    async def get_service_account(self, unique_id: str) -> ServiceAccount | None:
        return await self._record(as_service_account, _SQL.get_service_account, unique_id)

    async def find_service_account(self, email: str) -> ServiceAccount | None:
        return await self._record(as_service_account, _SQL.find_service_account, email.lower())

    async def list_service_accounts(self, project_id: str, *, after_email: str, limit: int) -> list[ServiceAccount]:
        rows = await self.pool.fetch(_SQL.list_service_accounts, project_id, after_email, limit)
        return [as_service_account(r) for r in rows]

    async def update_service_account(self, unique_id: str, **changes: Any) -> ServiceAccount | None:
        check_updatable(changes, SERVICE_ACCOUNT_UPDATABLE)
        if changes:
            try:
                await self.pool.execute(_SQL.update("service_accounts", "unique_id", changes), unique_id,
                                        *changes.values())
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from None
        return await self.get_service_account(unique_id)

    # keys
    async def create_key(self, key: KeyRecord) -> None:
        await self._insert(_SQL.create_key, key_row(key))

    async def create_key_within_quota(self, key: KeyRecord, limit: int) -> bool:
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    # Creates for one owner queue on a lock held to the end of the transaction: under READ
                    # COMMITTED the count would not see a concurrent, uncommitted insert.
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id(f"keys:{key.owner}"))
                    if await conn.fetchval(_SQL.count_keys, key.owner, key.key_type) >= limit:
                        return False
                    await conn.execute(_SQL.create_key, *key_row(key))
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from None
        return True

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._record(as_key, _SQL.get_key, key_id)

    async def list_keys(self, owner: str) -> list[KeyRecord]:
        return [as_key(r) for r in await self.pool.fetch(_SQL.list_keys, owner)]

    async def rotate_system_key(self, owner: str, expected_current: list[str], new: KeyRecord) -> bool:
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    rows = await conn.fetch(_SQL.current_system_keys + " FOR UPDATE", owner)
                    if sorted(r[0] for r in rows) != sorted(expected_current):
                        return False
                    await conn.execute(_SQL.retire_system_keys, new.created_at, owner)
                    await conn.execute(_SQL.create_key, *key_row(new))
            except asyncpg.UniqueViolationError:
                return False
        return True

    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord | None:
        check_updatable(changes, KEY_UPDATABLE)
        if changes:
            await self.pool.execute(_SQL.update("keys", "key_id", changes), key_id, *changes.values())
        return await self.get_key(key_id)

    # policies
    async def get_policy(self, resource: str) -> StoredPolicy | None:
        row = await self.pool.fetchrow(_SQL.get_policy, resource)
        return StoredPolicy(resource, orjson.loads(row[0]), row[1]) if row else None

    async def put_policy(self, resource: str, body: dict[str, Any], etag: str, *, expected_etag: str | None) -> bool:
        text = orjson.dumps(body).decode()
        if expected_etag is None:
            await self.pool.execute(_SQL.put_policy, resource, text, etag)
            return True
        if expected_etag == "ACAB":
            status = await self.pool.execute(_SQL.create_policy_if_absent, resource, text, etag)
        else:
            # Concurrent writers with one etag: the row lock serialises them and the loser's WHERE no longer
            # matches once the winner commits.
            status = await self.pool.execute(_SQL.replace_policy_if_etag, resource, text, etag, expected_etag)
        return _count(status) == 1

    async def policies_mentioning(self, text: str) -> list[StoredPolicy]:
        rows = await self.pool.fetch(f"SELECT {POLICY_COLUMNS} FROM policies WHERE strpos(body, $1) > 0", text)
        return [StoredPolicy(r[0], orjson.loads(r[1]), r[2]) for r in rows]

    async def policy_etags_mentioning(self, text: str) -> list[tuple[str, str]]:
        rows = await self.pool.fetch("SELECT resource, etag FROM policies WHERE strpos(body, $1) > 0", text)
        return [(r[0], r[1]) for r in rows]

    # users
    async def create_user(self, user: User) -> None:
        await self._insert(_SQL.create_user, user_row(user))

    async def get_user(self, user_id: str) -> User | None:
        return await self._record(as_user, _SQL.get_user, user_id)

    async def find_user(self, email: str) -> User | None:
        return await self._record(as_user, _SQL.find_user, email.lower())

    async def find_user_by_refresh_hash(self, refresh_token_hash: str) -> User | None:
        return await self._record(as_user, _SQL.find_user_by_refresh_hash, refresh_token_hash)

    async def list_users(self) -> list[User]:
        return [as_user(r) for r in await self.pool.fetch(_SQL.list_users)]

    async def update_user(self, user_id: str, **changes: Any) -> User | None:
        check_updatable(changes, USER_UPDATABLE)
        if changes:
            try:
                await self.pool.execute(_SQL.update("users", "user_id", changes), user_id, *changes.values())
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from None
        return await self.get_user(user_id)

    async def delete_user(self, user_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            deleted = _count(await conn.execute(_SQL.delete_user, user_id)) == 1
            await conn.execute(_SQL.delete_grants_of_user, user_id)
            await conn.execute(_SQL.delete_codes_of_user, user_id)
        return deleted

    # authorization codes and sign-in grants
    async def create_authorization_code(self, code: AuthorizationCode) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_SQL.delete_expired_codes, code.created_at)
            try:
                await conn.execute(_SQL.create_code, *code_row(code))
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from None

    async def take_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        # One statement: of concurrent takers, the row lock lets each count after the one before.
        return await self._record(as_code, _SQL.take_code, code_hash)

    async def record_code_exchange(self, code_hash: str, grant_id: str, token_hash: str) -> bool:
        return _count(await self.pool.execute(_SQL.record_code_exchange, code_hash, grant_id, token_hash)) == 1

    async def create_sign_in_grant(self, grant: SignInGrant) -> None:
        await self._insert(_SQL.create_grant, grant_row(grant))

    async def get_sign_in_grant(self, grant_id: str) -> SignInGrant | None:
        return await self._record(as_grant, _SQL.get_grant, grant_id)

    async def find_sign_in_grant(self, refresh_token_hash: str) -> SignInGrant | None:
        return await self._record(as_grant, _SQL.find_grant, refresh_token_hash)

    async def delete_sign_in_grant(self, grant_id: str) -> bool:
        return _count(await self.pool.execute(_SQL.delete_grant, grant_id)) == 1

    async def delete_sign_in_grants(self, user_id: str) -> int:
        return _count(await self.pool.execute(_SQL.delete_grants_of_user, user_id))

    async def take_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> bool:
        # An untouched bucket is full again after burst / per_second seconds: nothing to remember.
        await self.pool.execute("DELETE FROM sign_in_attempts WHERE updated_at < $1", now - burst / per_second)
        # One statement: the row lock orders concurrent takers from every replica.
        row = await self.pool.fetchrow(
            "INSERT INTO sign_in_attempts (subject, tokens, updated_at) VALUES ($1, $2::float8 - 1, $3::float8) "
            f"ON CONFLICT (subject) DO UPDATE SET tokens = {_REFILLED} - 1, "
            "updated_at = GREATEST(sign_in_attempts.updated_at, $3::float8) "
            f"WHERE {_REFILLED} >= 1 RETURNING subject", subject, burst, now, per_second)
        return row is not None

    async def refund_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> None:
        await self.pool.execute(
            f"UPDATE sign_in_attempts SET tokens = LEAST($2::float8, {_REFILLED} + 1), "
            "updated_at = GREATEST(sign_in_attempts.updated_at, $3::float8) WHERE subject = $1",
            subject, burst, now, per_second)

    # groups
    async def set_group(self, group: str, members: list[str]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_SQL.create_group, group)
            await conn.execute(_SQL.delete_group_members, group)
            await conn.executemany(_SQL.add_group_member, [(group, m) for m in members])

    async def get_group(self, group: str) -> list[str] | None:
        if await self.pool.fetchval(_SQL.group_exists, group) is None:
            return None
        return [r[0] for r in await self.pool.fetch(_SQL.group_members, group)]

    async def list_groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in await self.pool.fetch(_SQL.list_groups)}
        for grp, member in await self.pool.fetch(_SQL.list_group_members):
            out.setdefault(grp, []).append(member)
        return out

    async def delete_group(self, group: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_SQL.delete_group_members, group)
            return _count(await conn.execute(_SQL.delete_group, group)) == 1

    async def groups_of(self, member: str) -> list[str]:
        return [r[0] for r in await self.pool.fetch(_SQL.groups_of, member)]

    # org policies
    async def get_org_policy(self, resource: str, constraint: str) -> OrgPolicy | None:
        return await self._record(as_org_policy, _SQL.get_org_policy, resource, constraint)

    async def put_org_policy(self, policy: OrgPolicy, *, expected_etag: str | None = None) -> bool:
        row = org_policy_row(policy)
        if expected_etag == "ACAB":
            return _count(await self.pool.execute(_SQL.create_org_policy_if_absent, *row)) == 1
        if expected_etag is not None:
            # As put_policy: the row lock serialises writers with one etag; the loser's WHERE no longer matches.
            return _count(await self.pool.execute(_SQL.replace_org_policy_if_etag, *row, expected_etag)) == 1
        await self.pool.execute(_SQL.put_org_policy, *row)
        return True

    async def delete_org_policy(self, resource: str, constraint: str) -> bool:
        return _count(await self.pool.execute(_SQL.delete_org_policy, resource, constraint)) == 1

    async def list_org_policies(self, resource: str) -> list[OrgPolicy]:
        return [as_org_policy(r) for r in await self.pool.fetch(_SQL.list_org_policies, resource)]

    # services
    async def enable_services(self, project_id: str, services: list[str]) -> None:
        await self.pool.executemany(_SQL.enable_service, [(project_id, service) for service in services])

    async def disable_service(self, project_id: str, service: str) -> bool:
        return _count(await self.pool.execute(_SQL.disable_service, project_id, service)) == 1

    async def list_enabled_services(self, project_id: str) -> list[str]:
        rows = await self.pool.fetch(
            'SELECT service FROM project_services WHERE project_id=$1 ORDER BY service COLLATE "C"', project_id)
        return [r[0] for r in rows]

    # audit
    async def append_audit(self, entries: list[AuditEntry]) -> None:
        rows = [(e.insert_id, e.timestamp, e.method, e.principal, e.resource, e.denied,
                 orjson.dumps(e.body).decode()) for e in entries]  # AUDIT_COLUMNS' order
        # One round trip, atomic without a BEGIN and COMMIT of its own (asyncpg's executemany is one implicit
        # transaction), on a connection kept for it: the audit log's group commit appends one batch at a time,
        # and taking a connection from the pool and giving it back costs more CPU than the insert (about 35 us).
        if self._audit_busy:  # a second writer at once (not the audit log's): the pool serves it
            await self.pool.executemany(_SQL.append_audit, rows)
            return
        self._audit_busy = True
        try:
            if self._audit_conn is None or not _attached(self._audit_conn):
                await self._drop_audit_connection()
                self._audit_conn = await self.pool.acquire()
            conn = self._audit_conn
            try:
                if len(rows) == 1:
                    await conn.execute(_SQL.append_audit, *rows[0])  # cheaper than executemany for one row
                else:
                    await conn.executemany(_SQL.append_audit, rows)
            except BaseException:
                await self._drop_audit_connection()
                raise
        finally:
            self._audit_busy = False

    async def _drop_audit_connection(self) -> None:
        """Give the audit connection back closed: after a failure it may hang on a server that stopped answering
        (the next batch takes a new one from the pool, which connects to whichever host accepts writes)."""
        conn, self._audit_conn = self._audit_conn, None
        if conn is not None:
            await self._discard(conn)

    async def _discard(self, conn: Any) -> None:
        """Close a lent connection and give it back, whatever its state: the pool may have taken it back already
        (``_attached``), and then every method of it raises."""
        with contextlib.suppress(*_UNAVAILABLE):
            conn.terminate()
        with contextlib.suppress(*_UNAVAILABLE):
            await self.pool.release(conn)

    async def prune_audit(self, before: float, limit: int) -> int:
        status = await self.pool.execute(
            "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log WHERE timestamp < $1 "
            "AND seq < (SELECT MAX(seq) FROM audit_log) ORDER BY seq LIMIT $2)", before, limit)
        return int(status.split()[-1])

    async def query_audit(self, query: AuditQuery) -> list[AuditEntry]:
        clauses = ["seq > $1"]
        params: list[Any] = [query.after_seq]

        def arg(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.before_seq is not None:
            clauses.append(f"seq < {arg(query.before_seq)}")
        for column, value in (("principal", query.principal), ("method", query.method)):
            if value is not None:
                clauses.append(f"{column} = {arg(value)}")
        if query.resource is not None:
            clauses.append(f"(resource = {arg(query.resource)} OR starts_with(resource, {arg(query.resource + '/')}))")
        if query.since is not None:
            clauses.append(f"timestamp >= {arg(query.since)}")
        if query.denied is not None:
            clauses.append(f"denied = {arg(query.denied)}")
        rows = await self.pool.fetch(
            f"SELECT seq, {AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(clauses)} "
            f"ORDER BY seq{' DESC' if query.newest_first else ''} LIMIT {arg(query.limit)}", *params)
        return [as_audit_entry(r) for r in rows]

    # revocation
    async def revoke_token(self, token_hash: str, expires_at: float) -> None:
        await self.pool.execute(_SQL.revoke_token, token_hash, expires_at)

    async def is_token_revoked(self, token_hash: str) -> bool:
        return await self.pool.fetchval(_SQL.is_token_revoked, token_hash) is not None

    # workload identity pools and providers
    async def create_workload_pool(self, pool: WorkloadPool) -> None:
        await self._insert(_SQL.create_workload_pool, workload_pool_row(pool))

    async def get_workload_pool(self, name: str) -> WorkloadPool | None:
        return await self._record(as_workload_pool, _SQL.get_workload_pool, name)

    async def list_workload_pools(self, project_number: str) -> list[WorkloadPool]:
        return [as_workload_pool(r) for r in await self.pool.fetch(_SQL.list_workload_pools, project_number)]

    async def update_workload_pool(self, name: str, **changes: Any) -> WorkloadPool | None:
        check_updatable(changes, WORKLOAD_POOL_UPDATABLE)
        if changes:
            await self.pool.execute(_SQL.update("workload_pools", "name", changes), name, *changes.values())
        return await self.get_workload_pool(name)

    async def create_workload_provider(self, provider: WorkloadProvider) -> None:
        await self._insert(_SQL.create_workload_provider, workload_provider_row(provider))

    async def get_workload_provider(self, name: str) -> WorkloadProvider | None:
        return await self._record(as_workload_provider, _SQL.get_workload_provider, name)

    async def list_workload_providers(self, pool: str) -> list[WorkloadProvider]:
        return [as_workload_provider(r) for r in await self.pool.fetch(_SQL.list_workload_providers, pool)]

    async def update_workload_provider(self, name: str, **changes: Any) -> WorkloadProvider | None:
        check_updatable(changes, WORKLOAD_PROVIDER_UPDATABLE)
        stored = stored_changes(changes)
        if stored:
            await self.pool.execute(_SQL.update("workload_providers", "name", stored), name, *stored.values())
        return await self.get_workload_provider(name)

    async def list_x509_providers(self) -> list[WorkloadProvider]:
        return [as_workload_provider(r) for r in await self.pool.fetch(_SQL.list_x509_providers)]
