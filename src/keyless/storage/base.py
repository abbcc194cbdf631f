"""The storage protocol every backend implements, and the records it stores."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from keyless.errors import Aborted, MalformedData


@dataclass(frozen=True, slots=True)
class Project:
    project_id: str
    number: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    unique_id: str
    project_id: str
    account_id: str
    email: str
    display_name: str = ""
    description: str = ""
    disabled: bool = False
    deleted_at: float | None = None
    created_at: float = 0.0
    # Access tokens issued before this time are refused (set when the account is deleted).
    tokens_valid_after: float = 0.0


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    owner: str  # service-account unique id, or "issuer" for the ID-token signing keys
    key_type: str  # SYSTEM_MANAGED | USER_MANAGED
    key_origin: str  # GOOGLE_PROVIDED | USER_PROVIDED
    certificate_pem: bytes
    private_key_enc: bytes | None  # encrypted with the master key; None for uploaded keys
    valid_after: float
    valid_before: float
    created_at: float
    disabled: bool = False
    retired_at: float | None = None  # system-managed: no longer used to sign after this time
    deleted_at: float | None = None


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    client_id: str
    client_secret_hash: str
    refresh_token_hash: str
    created_at: float
    disabled: bool = False
    # The sign-in page's password (keyless.service.passwords' format); "" when none is set.
    password_hash: str = ""


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """An authorization code the sign-in page issued, named by a hash of its value: redeemable once, before
    ``expires_at``, by the client it was issued to, with the same redirect URI and the PKCE verifier behind
    ``code_challenge``."""

    code_hash: str
    client_id: str
    redirect_uri: str
    code_challenge: str  # S256
    user_id: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float
    offline: bool = False  # access_type=offline: the exchange also gives a refresh token
    nonce: str = ""  # OpenID Connect: repeated in the ID token
    # The token endpoint's record (RFC 6749 §4.1.2: a code presented twice revokes what its first exchange gave):
    redemptions: int = 0  # times presented at the token endpoint, counting the take that returned this record
    grant_id: str = ""  # what the first exchange gave: the sign-in grant of its refresh token (offline codes)...
    token_hash: str = ""  # ...and its access token's (crypto.tokens.token_hash of its id)


@dataclass(frozen=True, slots=True)
class SignInGrant:
    """A refresh token a user got by signing in to an OAuth client (``gcloud auth login``), named by its hash."""

    grant_id: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    refresh_token_hash: str
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    resource: str
    body: dict[str, Any]
    etag: str


@dataclass(frozen=True, slots=True)
class OrgPolicy:
    resource: str
    constraint: str
    spec: dict[str, Any] = field(default_factory=dict)
    etag: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkloadPool:
    """A workload identity pool, ``projects/NUMBER/locations/global/workloadIdentityPools/POOL``."""

    name: str
    project_number: str
    display_name: str = ""
    description: str = ""
    disabled: bool = False
    deleted_at: float | None = None  # state DELETED: undeletable for 30 days, then gone
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkloadProvider:
    """A provider of a workload identity pool, ``POOL_NAME/providers/PROVIDER``: which external tokens the pool
    accepts (``oidc``: issuerUri, allowedAudiences, jwksJson; or ``x509``: a trustStore of CA certificates; as the
    API spells them) and how their claims map to the federated principal's attributes."""

    name: str
    pool: str  # the pool's name
    display_name: str = ""
    description: str = ""
    disabled: bool = False
    deleted_at: float | None = None
    created_at: float = 0.0
    attribute_mapping: dict[str, str] = field(default_factory=dict)
    attribute_condition: str = ""
    oidc: dict[str, Any] = field(default_factory=dict)
    x509: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: one is built per request, and frozen fields cost 4x to set
class AuditEntry:
    insert_id: str
    timestamp: float
    method: str
    principal: str
    resource: str
    denied: bool
    body: dict[str, Any]
    seq: int = 0  # assigned by the store, increasing


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None = None
    principal: str | None = None
    resource: str | None = None  # this resource or anything under it ("resource/...")
    method: str | None = None
    denied: bool | None = None
    after_seq: int = 0
    before_seq: int | None = None  # only entries with a smaller seq (paging newest first)
    newest_first: bool = False
    limit: int = 100


# What update_service_account / update_key may change, in every backend.
SERVICE_ACCOUNT_UPDATABLE = frozenset({"display_name", "description", "disabled", "deleted_at", "tokens_valid_after"})
KEY_UPDATABLE = frozenset({"disabled", "retired_at", "deleted_at"})
USER_UPDATABLE = frozenset({"client_secret_hash", "refresh_token_hash", "disabled", "password_hash"})
WORKLOAD_POOL_UPDATABLE = frozenset({"display_name", "description", "disabled", "deleted_at"})
WORKLOAD_PROVIDER_UPDATABLE = frozenset({"display_name", "description", "disabled", "deleted_at", "attribute_mapping",
                                         "attribute_condition", "oidc", "x509"})


def check_updatable(changes: Mapping[str, object], updatable: frozenset[str]) -> None:
    """Refuse (ValueError) a change to a column the protocol does not let callers update."""
    unknown = set(changes) - updatable
    if unknown:
        raise MalformedData(f"cannot update {unknown}")


class Conflict(Aborted):
    """A uniqueness or compare-and-swap condition failed in the store (the service turns it into the answer the
    operation calls for; one that escapes is a 409 ABORTED)."""


class Store(Protocol):
    """What the service needs from a database. Every backend passes ``tests/storage``."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """A mutex held across every process sharing this database (bootstrap, migrations)."""
        ...

    # settings of the installation (organization number, default project, ...)
    async def generation(self) -> int:
        """A counter every state change increases (audit entries excepted): caches compare it per request. It
        moves at once for the processes of the replica that made the change; a backend may learn of other
        replicas' changes within a bound instead (PostgreSQL: ``notify.MAX_STALENESS``, answered from memory)."""
        ...
    async def bump_generation(self) -> None: ...
    async def memo(self) -> dict[Any, Any] | None:
        """The decision memo: where values derived from the stored state (a granted chain, a caller, which key
        signs) may be remembered until the state next changes. A backend alone cannot tell when that is
        and answers None; the read cache (``storage.cache.CachingStore``) answers its memo, emptied at every
        change, inside a request."""
        ...

    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...
    async def init_meta(self, key: str, value: str) -> str:
        """Set ``key`` unless it is set already; return the value in force."""
        ...

    async def create_project(self, project: Project) -> None: ...
    async def get_project(self, project_id: str) -> Project | None: ...
    async def list_projects(self) -> list[Project]: ...

    async def create_service_account(self, account: ServiceAccount) -> None:
        """Raise ``Conflict`` if an active account has the same email."""
        ...
    async def get_service_account(self, unique_id: str) -> ServiceAccount | None:
        """By unique id, deleted accounts included."""
        ...
    async def find_service_account(self, email: str) -> ServiceAccount | None:
        """The active (not deleted) account with this email."""
        ...
    async def list_service_accounts(self, project_id: str, *, after_email: str, limit: int) -> list[ServiceAccount]: ...
    async def update_service_account(self, unique_id: str, **changes: Any) -> ServiceAccount | None:
        """Change the columns of SERVICE_ACCOUNT_UPDATABLE; None when there is no such account."""
        ...

    async def create_key(self, key: KeyRecord) -> None: ...
    async def create_key_within_quota(self, key: KeyRecord, limit: int) -> bool:
        """Add ``key`` only if its owner has fewer than ``limit`` keys of its type that are not deleted, the
        count and the insert atomic across every process sharing this database. False (nothing added) when
        the owner has ``limit`` already."""
        ...
    async def get_key(self, key_id: str) -> KeyRecord | None: ...
    async def list_keys(self, owner: str) -> list[KeyRecord]:
        """All keys of an owner that are not deleted, oldest first."""
        ...
    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord | None: ...
    async def rotate_system_key(self, owner: str, expected_current: list[str], new: KeyRecord) -> bool:
        """Atomically retire ``owner``'s system-managed keys and add ``new`` — only if the keys not yet retired
        are exactly ``expected_current``. False means another process rotated first: read again."""
        ...

    async def get_policy(self, resource: str) -> StoredPolicy | None: ...
    async def put_policy(self, resource: str, body: dict[str, Any], etag: str, *, expected_etag: str | None) -> bool:
        """Write a policy. With ``expected_etag`` the write happens only if the stored etag still matches
        (``"ACAB"`` meaning: no policy stored yet); returns False when it did not."""
        ...
    async def policies_mentioning(self, text: str) -> list[StoredPolicy]: ...
    async def policy_etags_mentioning(self, text: str) -> list[tuple[str, str]]:
        """``policies_mentioning``'s (resource, etag) pairs, in its order, without reading the bodies out: whoever
        keeps parsed policies by etag fetches only those that changed."""
        ...

    async def create_user(self, user: User) -> None: ...
    async def get_user(self, user_id: str) -> User | None: ...
    async def find_user(self, email: str) -> User | None: ...
    async def find_user_by_refresh_hash(self, refresh_token_hash: str) -> User | None: ...
    async def list_users(self) -> list[User]: ...
    async def update_user(self, user_id: str, **changes: Any) -> User | None:
        """Change the columns of USER_UPDATABLE; raise ``Conflict`` if a new refresh token hash is taken; None
        when there is no such user."""
        ...
    async def delete_user(self, user_id: str) -> bool:
        """Delete the user with its sign-in grants and unredeemed authorization codes."""
        ...

    # the sign-in page's authorization codes, and the refresh tokens users got by signing in
    async def create_authorization_code(self, code: AuthorizationCode) -> None:
        """Store ``code``, dropping the codes that expired before it was created."""
        ...
    async def take_authorization_code(self, code_hash: str) -> AuthorizationCode | None:
        """Count one presentation of the code with this hash and return it with that count, atomically across
        every process sharing this database: of concurrent takers of one code, exactly one gets it with
        ``redemptions`` 1. The code stays (until it expires) with what its first exchange recorded, which a
        later taker gets. Expired codes are returned too (the caller decides, on its clock)."""
        ...
    async def record_code_exchange(self, code_hash: str, grant_id: str, token_hash: str) -> bool:
        """Record what the first exchange of the code gave (its sign-in grant, "" for none, and its access
        token's hash), unless the code was taken again since: then record nothing and return False."""
        ...
    async def create_sign_in_grant(self, grant: SignInGrant) -> None:
        """Raise ``Conflict`` if the grant id or the refresh token hash is taken."""
        ...
    async def get_sign_in_grant(self, grant_id: str) -> SignInGrant | None: ...
    async def find_sign_in_grant(self, refresh_token_hash: str) -> SignInGrant | None: ...
    async def delete_sign_in_grant(self, grant_id: str) -> bool: ...
    async def delete_sign_in_grants(self, user_id: str) -> int:
        """Delete every sign-in grant of the user; return how many."""
        ...

    # the sign-in page's failed passwords, counted per user for every replica at once
    async def take_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> bool:
        """Take one attempt from ``subject``'s bucket (``burst`` attempts, refilled at ``per_second``),
        atomically across every process sharing this database; False, nothing taken, when it is empty. Buckets
        full again are forgotten."""
        ...
    async def refund_sign_in_attempt(self, subject: str, now: float, *, burst: float, per_second: float) -> None:
        """Give back one attempt ``take_sign_in_attempt`` took (never beyond a full bucket)."""
        ...

    async def set_group(self, group: str, members: list[str]) -> None: ...
    async def get_group(self, group: str) -> list[str] | None: ...
    async def list_groups(self) -> dict[str, list[str]]: ...
    async def delete_group(self, group: str) -> bool: ...
    async def groups_of(self, member: str) -> list[str]: ...

    async def get_org_policy(self, resource: str, constraint: str) -> OrgPolicy | None: ...
    async def put_org_policy(self, policy: OrgPolicy, *, expected_etag: str | None = None) -> bool:
        """Write an org policy. With ``expected_etag`` the write happens only if the stored policy's etag still
        matches (``"ACAB"`` meaning: no policy stored yet; otherwise a policy that does not exist matches
        nothing); returns False when it did not."""
        ...
    async def delete_org_policy(self, resource: str, constraint: str) -> bool: ...
    async def list_org_policies(self, resource: str) -> list[OrgPolicy]: ...

    async def enable_services(self, project_id: str, services: list[str]) -> None:
        """Record services as enabled on a project (one enabled already stays so)."""
        ...
    async def disable_service(self, project_id: str, service: str) -> bool:
        """Record a service as disabled on a project; False when it was not enabled."""
        ...
    async def list_enabled_services(self, project_id: str) -> list[str]:
        """The services enabled on a project, in name order."""
        ...

    # workload identity federation: pools and their providers, by full resource name (deleted ones included)
    async def create_workload_pool(self, pool: WorkloadPool) -> None:
        """Raise ``Conflict`` if a pool (deleted or not) has the name."""
        ...
    async def get_workload_pool(self, name: str) -> WorkloadPool | None: ...
    async def list_workload_pools(self, project_number: str) -> list[WorkloadPool]:
        """The project's pools, deleted ones included, in name order."""
        ...
    async def update_workload_pool(self, name: str, **changes: Any) -> WorkloadPool | None:
        """Change the columns of WORKLOAD_POOL_UPDATABLE; None when there is no such pool."""
        ...
    async def create_workload_provider(self, provider: WorkloadProvider) -> None:
        """Raise ``Conflict`` if a provider (deleted or not) has the name."""
        ...
    async def get_workload_provider(self, name: str) -> WorkloadProvider | None: ...
    async def list_workload_providers(self, pool: str) -> list[WorkloadProvider]:
        """The pool's providers, deleted ones included, in name order."""
        ...
    async def update_workload_provider(self, name: str, **changes: Any) -> WorkloadProvider | None:
        """Change the columns of WORKLOAD_PROVIDER_UPDATABLE; None when there is no such provider."""
        ...
    async def list_x509_providers(self) -> list[WorkloadProvider]:
        """Every X.509 provider of every pool (deleted ones included), by name: the CAs the mTLS listener asks
        clients' certificates of."""
        ...

    async def append_audit(self, entries: list[AuditEntry]) -> None:
        """Store entries in one transaction before returning (the credentials they cover are released only
        then)."""
        ...
    async def query_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching the query with ``seq`` greater than ``after_seq`` (and less than ``before_seq``),
        oldest first, or newest first with ``newest_first``."""
        ...
    async def prune_audit(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` of the oldest entries stamped before ``before``, in one transaction; return how
        many. The newest entry is always kept, so ``seq`` never starts again from the beginning."""
        ...

    async def revoke_token(self, token_hash: str, expires_at: float) -> None: ...
    async def is_token_revoked(self, token_hash: str) -> bool: ...
