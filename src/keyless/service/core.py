"""The shared state of a running keyless and the permission checks every operation uses."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from keyless.clock import Clock
from keyless.crypto.keys import MasterKey
from keyless.crypto.tokens import TokenMinter
from keyless.domain.conditions import RequestContext
from keyless.domain.names import AccountRef
from keyless.domain.policy import EMPTY_POLICY, Policy, Principal, explain, is_allowed, load_stored_policy
from keyless.errors import KeylessError, NotFound, PermissionDenied
from keyless.service import audit, denials
from keyless.service.config import Settings
from keyless.service.keyring import KeyRing
from keyless.storage.base import ServiceAccount, Store

SA_RESOURCE_TYPE = "iam.googleapis.com/ServiceAccount"
PROJECT_RESOURCE_TYPE = "cloudresourcemanager.googleapis.com/Project"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller."""

    principal: Principal
    principal_id: str  # service-account unique id or user id
    scopes: tuple[str, ...]
    expires_at: float
    token_id: str | None = None
    key_id: str | None = None
    # The project the request's x-goog-user-project header names (whose quota it asks to use).
    user_project: str | None = None

    @property
    def email(self) -> str:
        return self.principal.email


def project_resource(project_id: str) -> str:
    return f"projects/{project_id}"


def account_resource(account: ServiceAccount) -> str:
    """Where an account's own policy is stored: by unique id, so a re-created email inherits nothing."""
    return f"projects/{account.project_id}/serviceAccounts/{account.unique_id}"


def account_condition_name(account: ServiceAccount) -> str:
    # IAM Conditions see service accounts as projects/-/serviceAccounts/UNIQUE_ID.
    return f"projects/-/serviceAccounts/{account.unique_id}"


async def in_named_project(core: Core, ref: AccountRef, account: ServiceAccount) -> bool:
    """Whether the project a name gives (``-``, an id or a number) exists and holds ``account``."""
    if ref.project in ("-", account.project_id):
        return True
    project = await core.store.get_project(ref.project)
    return project is not None and project.project_id == account.project_id


class Core:
    def __init__(self, store: Store, clock: Clock, settings: Settings, master: MasterKey) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.master = master
        self.keyring = KeyRing(store, master, clock, settings)
        self.minter = TokenMinter(master.token_mac_key)
        self._policy_cache: dict[str, tuple[str, Policy]] = {}
        # Keyed once: each hash copies this state rather than setting the key up again.
        self._audit_hmac = hmac.new(master.audit_hash_key, digestmod=hashlib.sha256)

    def audit_hash(self, value: str) -> str:
        """A keyed hash (HMAC-SHA256) that names a token or signature in the audit log without revealing it."""
        mac = self._audit_hmac.copy()
        mac.update(value.encode())
        return mac.hexdigest()[:32]

    def now(self) -> float:
        return self.clock.now()

    async def resolve_account(self, ref: AccountRef | str) -> ServiceAccount | None:
        """The active account named by email or unique id (deleted accounts resolve to None)."""
        account = ref.account if isinstance(ref, AccountRef) else ref
        if account.isdigit() and account.isascii():  # a unique id (domain.numbers.is_ascii_digits)
            sa = await self.store.get_service_account(account)
            return sa if sa is not None and sa.deleted_at is None else None
        return await self.store.find_service_account(account.lower())

    async def load_policy(self, resource: str) -> Policy:
        stored = await self.store.get_policy(resource)
        if stored is None:
            return EMPTY_POLICY
        cached = self._policy_cache.get(resource)
        if cached is not None and cached[0] == stored.etag:
            return cached[1]
        policy = load_stored_policy(stored.body, stored.etag)
        if len(self._policy_cache) > 10_000:
            self._policy_cache.clear()
        self._policy_cache[resource] = (stored.etag, policy)
        return policy

    async def identities(self, principal: Principal) -> frozenset[str]:
        """The members a binding may name to reach ``principal``: itself, its groups, its domain, everyone.
        Remembered in the decision memo: they change only with the stored state (a group's members). A federated
        principal's depend on its mapped groups and attributes too, hence ``federated`` in the key."""
        memo = await self.store.memo()
        key = ("identities", principal.kind, principal.email, principal.federated)
        found: frozenset[str] | None = None if memo is None else memo.get(key)
        if found is None:
            groups = await self.store.groups_of(principal.member)
            if groups:
                principal = Principal(principal.kind, principal.email, frozenset(groups), principal.federated)
            found = principal.identities()
            if memo is not None:
                memo[key] = found
        return found

    async def decide_on_account(self, identities: frozenset[str], permission: str, account: ServiceAccount
                                ) -> tuple[bool, bool]:
        """Whether ``identities`` hold ``permission`` on ``account`` (its own policy and its project's), and
        whether either policy is conditional (so that the answer may change with the time alone)."""
        ctx = RequestContext(self.clock.now(), account_condition_name(account), SA_RESOURCE_TYPE)
        policies = (await self.load_policy(account_resource(account)),
                    await self.load_policy(project_resource(account.project_id)))
        return (is_allowed(policies, identities, permission, ctx),
                policies[0].has_conditions or policies[1].has_conditions)

    async def allowed_on_account(self, identities: frozenset[str], permission: str, account: ServiceAccount) -> bool:
        """``decide_on_account``, noted in the request's audit entry."""
        granted, _ = await self.decide_on_account(identities, permission, account)
        audit.note_authorization(permission, account_condition_name(account), granted)
        return granted

    async def allowed_on_project(self, identities: frozenset[str], permission: str, project_id: str) -> bool:
        ctx = RequestContext(self.now(), project_resource(project_id), PROJECT_RESOURCE_TYPE,
                             "cloudresourcemanager.googleapis.com")
        granted = is_allowed([await self.load_policy(project_resource(project_id))], identities, permission, ctx)
        audit.note_authorization(permission, project_resource(project_id), granted)
        return granted

    async def require_on_account(self, caller: Caller, permission: str, account: ServiceAccount, named: str
                                 ) -> None:
        """Refuse unless the caller holds ``permission`` on ``account``. The denial names the account as the
        caller did (``named``), never by what keyless knows of it (its email, its project): it must read the
        same as the denial for an account that does not exist (see ``Accounts.lookup``)."""
        identities = await self.identities(caller.principal)
        if not await self.allowed_on_account(identities, permission, account):
            await self.explain_on_account(caller.principal.member, identities, permission, account)
            raise PermissionDenied.iam(permission, named)

    async def missing_account(self, caller: Caller, ref: AccountRef, permission: str) -> KeylessError:
        """The answer to a request needing ``permission`` on an account ``ref`` names that is not there (or not
        in the project named), so that a caller who may not learn which accounts exist cannot tell it from an
        existing account it may not use:

        * the project named does not exist: 404 (for any caller: it says nothing of any account, and listing
          or creating accounts there answers 404 too);
        * the caller may learn which accounts the project named holds (it holds ``permission``, or
          ``iam.serviceAccounts.get`` or ``.list``, on the project): 404, as Google answers such principals;
        * otherwise, and always through the ``-`` wildcard (no project named; Google documents a 403 there):
          the very denial ``require_on_account`` gives an account the caller may not use."""
        if not ref.wildcard:
            project = await self.store.get_project(ref.project)
            if project is None:
                return NotFound(f"Service account {ref.name} does not exist.")
            identities = await self.identities(caller.principal)
            for needed in dict.fromkeys((permission, "iam.serviceAccounts.get", "iam.serviceAccounts.list")):
                if await self.allowed_on_project(identities, needed, project.project_id):
                    return NotFound(f"Service account {ref.name} does not exist.")
        return PermissionDenied.iam(permission, ref.name)

    async def require_on_project(self, caller: Caller, permission: str, project_id: str) -> None:
        identities = await self.identities(caller.principal)
        if not await self.allowed_on_project(identities, permission, project_id):
            await self.explain_on_project(caller.principal.member, identities, permission, project_id)
            raise PermissionDenied.iam(permission, project_resource(project_id))

    # Why a request is refused, for the owner: called on the way to a denial only (a grant never pays for it),
    # and only when the request has an audit entry to carry it. Nothing of it reaches the caller.

    async def explain_on_account(self, member: str, identities: frozenset[str], permission: str,
                                 account: ServiceAccount, hop: denials.HopIndex | None = None) -> None:
        if not audit.explaining():
            return
        ctx = RequestContext(self.now(), account_condition_name(account), SA_RESOURCE_TYPE)
        policies = [await self.load_policy(account_resource(account)),
                    await self.load_policy(project_resource(account.project_id))]
        why = explain(policies, identities, permission, ctx)
        audit.note_explanation(denials.refused(why, member, account.email, account_condition_name(account), hop))

    async def explain_on_project(self, member: str, identities: frozenset[str], permission: str,
                                 project_id: str) -> None:
        if not audit.explaining():
            return
        ctx = RequestContext(self.now(), project_resource(project_id), PROJECT_RESOURCE_TYPE,
                             "cloudresourcemanager.googleapis.com")
        why = explain([await self.load_policy(project_resource(project_id))], identities, permission, ctx)
        resource = project_resource(project_id)
        audit.note_explanation(denials.refused(why, member, resource, resource))

    async def explain_missing_account(self, member: str, ref: AccountRef, permission: str,
                                      hop: denials.HopIndex | None = None) -> None:
        if audit.explaining():
            audit.note_explanation(await denials.missing_account(self.store, member, ref, permission, hop))

    async def explain_missing_project(self, member: str, project: str, permission: str) -> None:
        if audit.explaining():
            audit.note_explanation(denials.missing_project(member, project, permission))
