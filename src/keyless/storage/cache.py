"""A read cache in front of any store, consistent across processes and replicas.

Every state change bumps a generation counter in the database. Each request reads that counter once (on
its first cached read: from memory on SQLite and, while its change notifications are known to be current, on
PostgreSQL) and drops the whole cache when it moved. A change is seen by the next request in every process of
the replica that made it, and by other replicas' next requests (on PostgreSQL within 1 s: storage/notify.py),
while a request on unchanged state reads nothing but the counter. A read that began before a change and ends
after it is never kept. Outside a request (bootstrap, CLI-side code), reads go straight to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar

from keyless.errors import Unavailable
from keyless.storage.base import (
    AuditEntry,
    AuditQuery,
    AuthorizationCode,
    KeyRecord,
    OrgPolicy,
    Project,
    ServiceAccount,
    SignInGrant,
    Store,
    StoredPolicy,
    User,
    WorkloadPool,
    WorkloadProvider,
)

T = TypeVar("T")
P = ParamSpec("P")
UNCHECKED = -1  # a generation no store has: the request has not read the counter yet


class RequestScope:
    """One request as the layers below its wire adapter see it, set once in ``current_request`` by the adapter that
    received it (the REST edge, a gRPC call): here, the stored state's generation its cached reads checked (once
    per request). The adapters' scope is the request's audit record (``keyless.service.audit.AuditRecord``), which
    carries the generation with the rest of what the request shares."""

    __slots__ = ("generation",)

    def __init__(self) -> None:
        self.generation = UNCHECKED


# The request the current task serves; None outside one (bootstrap, CLI-side code), where reads go to the store.
current_request: ContextVar[RequestScope | None] = ContextVar("keyless_request", default=None)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """A request scope of its own around a block (tests, and code that serves no wire request)."""
    token = current_request.set(RequestScope())
    try:
        yield
    finally:
        current_request.reset(token)


def _remembered(read: Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]
                ) -> Callable[Concatenate[CachingStore, P], Coroutine[Any, Any, T]]:
    """A read of the ``Store`` protocol that the cache remembers: the backend's method of that name, its answer kept
    under the name and arguments until the state changes (inside a request; outside one, the backend answers).
    One function for every remembered read: a read is one frame, not a method and a helper."""
    name = read.__name__

    async def remembered(self: CachingStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        load = getattr(self.inner, name)
        value: T
        if await self.memo() is None:
            value = await load(*args, **kwargs)
            return value
        key = (name, *args, *kwargs.items())
        cache = self._cache
        if key in cache:
            value = cache[key]
            return value
        value = await load(*args, **kwargs)
        if len(cache) >= self.MAX_ENTRIES:
            cache.clear()
        cache[key] = value
        return value

    return remembered


class CachingStore:
    MAX_ENTRIES = 200_000

    append_audit: Callable[[list[AuditEntry]], Coroutine[Any, Any, None]]

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        # The backend's own method, no frame between: every credential request appends its entry.
        self.append_audit = inner.append_audit
        self._generation = UNCHECKED
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._memo: dict[Any, Any] = {}
        self._bumping: asyncio.Task[None] | None = None

    def __getattr__(self, name: str) -> Any:
        # Backend extras (SqliteStore.path, PostgresStore.dsn, ...) stay reachable.
        return getattr(self.inner, name)

    async def memo(self) -> dict[Any, Any] | None:
        """The decision memo (``Store.memo``): a dict for values derived from the stored state (decisions,
        parsed objects), valid for as long as the cache is: emptied whenever the state changes. None outside
        a request."""
        scope = current_request.get()
        if scope is None:
            return None
        if scope.generation == UNCHECKED:
            scope.generation = await self.inner.generation()
        if scope.generation != self._generation:
            # New dicts, not cleared ones: a read (or a decision) that began before a change and ends after it
            # stores into the dict it started with, which nothing reads any more.
            self._cache, self._memo, self._generation = {}, {}, scope.generation
        return self._memo

    async def _changed(self) -> None:
        try:
            await self.inner.bump_generation()
        except Unavailable:
            self._bump_later()
            raise
        finally:
            self._forget()

    def _forget(self) -> None:
        """Drop everything (new dicts, as in ``memo``): the next request reads the counter again."""
        self._cache, self._memo, self._generation = {}, {}, UNCHECKED

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        """Around a write: the change counter moves after it, whatever its outcome."""
        try:
            yield
        except Unavailable:
            # The write may have committed all the same, but waiting on that database a second time would double
            # the request's wait.
            self._forget()
            self._bump_later()
            raise
        except BaseException:
            await self._changed()
            raise
        await self._changed()

    def _bump_later(self) -> None:
        """The counter could not be increased (the database unavailable): increase it in the background as soon
        as the database answers, so that other processes drop what they cached before a change that may have
        committed. (After a failover their caches go anyway: see PostgresStore.generation.)"""
        if self._bumping is None or self._bumping.done():
            self._bumping = asyncio.create_task(self._bump_when_available())

    async def _bump_when_available(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.inner.bump_generation()
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self._forget()
                return

    # lifecycle
    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        if self._bumping is not None:
            self._bumping.cancel()
        await self.inner.close()

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        return self.inner.lock(name)

    async def generation(self) -> int:
        return await self.inner.generation()

    async def bump_generation(self) -> None:
        await self._changed()

    # meta
    get_meta = _remembered(Store.get_meta)

    async def set_meta(self, key: str, value: str) -> None:
        async with self._changing():
            await self.inner.set_meta(key, value)

    async def init_meta(self, key: str, value: str) -> str:
        async with self._changing():
            return await self.inner.init_meta(key, value)

    # projects
    async def create_project(self, project: Project) -> None:
        async with self._changing():
            await self.inner.create_project(project)

    get_project = _remembered(Store.get_project)

    async def list_projects(self) -> list[Project]:
        return await self.inner.list_projects()

    # service accounts
    async def create_service_account(self, account: ServiceAccount) -> None:
        async with self._changing():
            await self.inner.create_service_account(account)

    get_service_account = _remembered(Store.get_service_account)

    find_service_account = _remembered(Store.find_service_account)

    async def list_service_accounts(self, project_id: str, *, after_email: str, limit: int) -> list[ServiceAccount]:
        return await self.inner.list_service_accounts(project_id, after_email=after_email, limit=limit)

    async def update_service_account(self, unique_id: str, **changes: Any) -> ServiceAccount | None:
        async with self._changing():
            return await self.inner.update_service_account(unique_id, **changes)

    # keys
    async def create_key(self, key: KeyRecord) -> None:
        async with self._changing():
            await self.inner.create_key(key)

    async def create_key_within_quota(self, key: KeyRecord, limit: int) -> bool:
        async with self._changing():
            return await self.inner.create_key_within_quota(key, limit)

    get_key = _remembered(Store.get_key)

    list_keys = _remembered(Store.list_keys)

    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord | None:
        async with self._changing():
            return await self.inner.update_key(key_id, **changes)

    async def rotate_system_key(self, owner: str, expected_current: list[str], new: KeyRecord) -> bool:
        async with self._changing():
            return await self.inner.rotate_system_key(owner, expected_current, new)

    # policies
    get_policy = _remembered(Store.get_policy)

    async def put_policy(self, resource: str, body: dict[str, Any], etag: str, *, expected_etag: str | None) -> bool:
        async with self._changing():
            return await self.inner.put_policy(resource, body, etag, expected_etag=expected_etag)

    async def policies_mentioning(self, text: str) -> list[StoredPolicy]:
        return await self.inner.policies_mentioning(text)

    # users
    async def create_user(self, user: User) -> None:
        async with self._changing():
            await self.inner.create_user(user)

    get_user = _remembered(Store.get_user)

    async def find_user(self, email: str) -> User | None:
        return await self.inner.find_user(email)

    async def find_user_by_refresh_hash(self, refresh_token_hash: str) -> User | None:
        return await self.inner.find_user_by_refresh_hash(refresh_token_hash)

    async def list_users(self) -> list[User]:
        return await self.inner.list_users()

    async def update_user(self, user_id: str, **changes: Any) -> User | None:
        async with self._changing():
            return await self.inner.update_user(user_id, **changes)

    async def delete_user(self, user_id: str) -> bool:
        async with self._changing():
            return await self.inner.delete_user(user_id)

    # authorization codes (never cached: each is taken once) and sign-in grants
    async def create_authorization_code(self, code: AuthorizationCode) -> None:
        try:
            await self.inner.create_authorization_code(code)
        finally:
            await self._changed()

    async def take_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        try:
            return await self.inner.take_authorization_code(code_hash)
        finally:
            await self._changed()

    async def record_code_exchange(self, code_hash: str, grant_id: str, token_hash: str) -> bool:
        try:
            return await self.inner.record_code_exchange(code_hash, grant_id, token_hash)
        finally:
            await self._changed()

    async def create_sign_in_grant(self, grant: SignInGrant) -> None:
        try:
            await self.inner.create_sign_in_grant(grant)
        finally:
            await self._changed()

    get_sign_in_grant = _remembered(Store.get_sign_in_grant)

    async def find_sign_in_grant(self, refresh_token_hash: str) -> SignInGrant | None:
        return await self.inner.find_sign_in_grant(refresh_token_hash)

    async def delete_sign_in_grant(self, grant_id: str) -> bool:
        try:
            return await self.inner.delete_sign_in_grant(grant_id)
        finally:
            await self._changed()

    async def delete_sign_in_grants(self, user_id: str) -> int:
        try:
            return await self.inner.delete_sign_in_grants(user_id)
        finally:
            await self._changed()

    # failed sign-ins: counted in the store, never cached (nothing cached depends on them)
    async def take_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> bool:
        return await self.inner.take_sign_in_attempt(subject, now, burst=burst, per_second=per_second)

    async def refund_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> None:
        await self.inner.refund_sign_in_attempt(subject, now, burst=burst, per_second=per_second)

    # groups
    async def set_group(self, group: str, members: list[str]) -> None:
        async with self._changing():
            await self.inner.set_group(group, members)

    async def get_group(self, group: str) -> list[str] | None:
        return await self.inner.get_group(group)

    async def list_groups(self) -> dict[str, list[str]]:
        return await self.inner.list_groups()

    async def delete_group(self, group: str) -> bool:
        async with self._changing():
            return await self.inner.delete_group(group)

    groups_of = _remembered(Store.groups_of)

    # org policies
    get_org_policy = _remembered(Store.get_org_policy)

    async def put_org_policy(self, policy: OrgPolicy, *, expected_etag: str | None = None) -> bool:
        async with self._changing():
            return await self.inner.put_org_policy(policy, expected_etag=expected_etag)

    async def delete_org_policy(self, resource: str, constraint: str) -> bool:
        async with self._changing():
            return await self.inner.delete_org_policy(resource, constraint)

    async def list_org_policies(self, resource: str) -> list[OrgPolicy]:
        return await self.inner.list_org_policies(resource)

    # services
    async def enable_services(self, project_id: str, services: list[str]) -> None:
        try:
            await self.inner.enable_services(project_id, services)
        finally:
            await self._changed()

    async def disable_service(self, project_id: str, service: str) -> bool:
        try:
            return await self.inner.disable_service(project_id, service)
        finally:
            await self._changed()

    # Read on every request of `keyless serve --enforce-services`.
    list_enabled_services = _remembered(Store.list_enabled_services)

    # audit (never cached, never a state change): append_audit is the backend's own (bound in __init__)

    async def query_audit(self, query: AuditQuery) -> list[AuditEntry]:
        return await self.inner.query_audit(query)

    async def prune_audit(self, before: float, limit: int) -> int:
        return await self.inner.prune_audit(before, limit)

    # revocation
    async def revoke_token(self, token_hash: str, expires_at: float) -> None:
        async with self._changing():
            await self.inner.revoke_token(token_hash, expires_at)

    is_token_revoked = _remembered(Store.is_token_revoked)

    # workload identity pools and providers: the token exchange and every federated caller read them
    async def create_workload_pool(self, pool: WorkloadPool) -> None:
        async with self._changing():
            await self.inner.create_workload_pool(pool)

    get_workload_pool = _remembered(Store.get_workload_pool)

    async def list_workload_pools(self, project_number: str) -> list[WorkloadPool]:
        return await self.inner.list_workload_pools(project_number)

    async def update_workload_pool(self, name: str, **changes: Any) -> WorkloadPool | None:
        async with self._changing():
            return await self.inner.update_workload_pool(name, **changes)

    async def create_workload_provider(self, provider: WorkloadProvider) -> None:
        async with self._changing():
            await self.inner.create_workload_provider(provider)

    get_workload_provider = _remembered(Store.get_workload_provider)

    async def list_workload_providers(self, pool: str) -> list[WorkloadProvider]:
        return await self.inner.list_workload_providers(pool)

    async def update_workload_provider(self, name: str, **changes: Any) -> WorkloadProvider | None:
        async with self._changing():
            return await self.inner.update_workload_provider(name, **changes)

    async def list_x509_providers(self) -> list[WorkloadProvider]:
        return await self.inner.list_x509_providers()
