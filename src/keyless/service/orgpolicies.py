"""Organization policies on projects and on the installation's organization: Org Policy v2 and Resource Manager
v1's org-policy methods (two views of the same stored policies), the effective policy, and the checks the
emulated constraints make (``keyless.domain.constraints``).

A project's policies are read and written with the ``orgpolicy.*`` permissions on the project (``roles/owner``,
``roles/orgpolicy.policyAdmin``, ``roles/iam.securityAdmin``). The organization (``organizations/NUMBER``, the
installation's organization number) has no IAM policy of its own in keyless: its policies are the owner's, as
every other installation-wide setting (``keyless.admin``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from keyless.domain.constraints import (
    CONSTRAINTS,
    KEY_CREATION_CONSTRAINT,
    KEY_EXPIRY_CONSTRAINT,
    KEY_UPLOAD_CONSTRAINT,
    Constraint,
    boolean_enforced,
    constraint_named,
    effective_spec,
    key_expiry_seconds,
    list_allows,
    parse_spec,
    spec_from_v1,
)
from keyless.domain.lifetimes import LIFETIME_EXTENSION_CONSTRAINT
from keyless.domain.numbers import is_ascii_digits
from keyless.domain.policy import EMPTY_ETAG, canonical_etag, new_etag
from keyless.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from keyless.service import audit
from keyless.service.core import Caller, Core
from keyless.service.policies import CONCURRENT_CHANGE
from keyless.service.policy_requests import (
    ConstraintList,
    EffectiveOrgPolicy,
    OrgPolicyList,
    OrgPolicyRequest,
    PlacedOrgPolicy,
    SetOrgPolicyV1Request,
    WriteOrgPolicyRequest,
)
from keyless.storage.base import OrgPolicy, ServiceAccount

ORGANIZATION = "organizations/-"  # where the organization's policies are stored
ADMIN_PERMISSION = "keyless.admin"
# Permissions of each method, on the project whose policies it reads or writes.
GET, LIST, CREATE, UPDATE, DELETE = ("orgpolicy.policy.get", "orgpolicy.policies.list", "orgpolicy.policies.create",
                                     "orgpolicy.policies.update", "orgpolicy.policies.delete")
SET_V1, CONSTRAINTS_LIST = "orgpolicy.policy.set", "orgpolicy.constraints.list"


def given_etag(value: object, wire: str) -> str | None:
    """An etag the caller sent, in the standard base64 alphabet (None when absent); 400 when it is not base64."""
    if value is None or value == "":
        return None
    canonical = canonical_etag(value) if isinstance(value, str) else None
    if canonical is None:
        raise InvalidArgument(f"Invalid value at '{wire}' (TYPE_BYTES), {value!r}: expected base64.", field=wire)
    return canonical


def account_subject(account: ServiceAccount) -> str:
    """How a constraint violation names a service account, as Google does."""
    return (f"projects/{account.project_id}/serviceAccounts/{account.email}"
            f"?configvalue={quote(account.email, safe='')}")


async def effective_on_project(core: Core, constraint: str, project_id: str) -> dict[str, Any] | None:
    """The spec in force on a project (None: the constraint's default)."""
    found = CONSTRAINTS[constraint]
    organization = await core.store.get_org_policy(ORGANIZATION, constraint)
    project = await core.store.get_org_policy(f"projects/{project_id}", constraint)
    return effective_spec(found, organization.spec if organization else None, project.spec if project else None)


async def require_key_creation_allowed(core: Core, account: ServiceAccount) -> None:
    if boolean_enforced(await effective_on_project(core, KEY_CREATION_CONSTRAINT, account.project_id)):
        message = "Key creation is not allowed on this service account."
        raise FailedPrecondition.violation(message, kind=KEY_CREATION_CONSTRAINT, subject=account_subject(account),
                                           description=message)


async def require_key_upload_allowed(core: Core, account: ServiceAccount) -> None:
    if boolean_enforced(await effective_on_project(core, KEY_UPLOAD_CONSTRAINT, account.project_id)):
        message = (f"Constraint `{KEY_UPLOAD_CONSTRAINT}` violated for service account projects/"
                   f"{account.project_id}/serviceAccounts/{account.email} attempting to upload public key.")
        raise FailedPrecondition.violation(message, kind=KEY_UPLOAD_CONSTRAINT, subject=account_subject(account),
                                           description=message)


async def key_lifetime_limit(core: Core, account: ServiceAccount) -> int | None:
    """Seconds a new user-managed key of ``account`` may live (``iam.serviceAccountKeyExpiryHours``); None: no limit."""
    return key_expiry_seconds(await effective_on_project(core, KEY_EXPIRY_CONSTRAINT, account.project_id))


async def lifetime_extension_allowed(core: Core, account: ServiceAccount) -> bool:
    """Whether ``account`` is listed in ``iam.allowServiceAccountCredentialLifetimeExtension`` (bare email or as a
    ``serviceAccount:`` member)."""
    spec = await effective_on_project(core, LIFETIME_EXTENSION_CONSTRAINT, account.project_id)
    return list_allows(CONSTRAINTS[LIFETIME_EXTENSION_CONSTRAINT], spec,
                       (account.email, f"serviceAccount:{account.email}"))


class OrgPolicies:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def parent(self, caller: Caller, parent: str, permission: str) -> tuple[str, str]:
        """Where a parent's policies are stored and how answers name it, once the caller may ``permission`` there:
        ``projects/ID`` (a project id or number), or ``organizations/NUMBER`` (the installation's organization)."""
        kind, _, ident = parent.partition("/")
        if kind == "projects" and ident:
            project = await self.core.store.get_project(ident)
            if project is None:
                raise NotFound(f"Project '{ident}' not found or permission denied.")
            await self.core.require_on_project(caller, permission, project.project_id)
            return f"projects/{project.project_id}", f"projects/{project.project_id}"
        if kind == "organizations" and ident:
            number = await self.core.store.get_meta("organization_number")
            if not is_ascii_digits(ident) or ident != number:
                raise NotFound(f"Organization '{ident}' not found or permission denied.")
            identities = await self.core.identities(caller.principal)
            if not await self.core.allowed_on_project(identities, ADMIN_PERMISSION, self.core.settings.default_project):
                raise PermissionDenied.iam(permission, f"organizations/{number}")
            return ORGANIZATION, f"organizations/{number}"
        if kind == "folders":
            raise NotFound(f"Folder '{ident}' not found: keyless has no folders.")
        raise InvalidArgument(f"Invalid parent '{parent}': use projects/PROJECT_ID or organizations/NUMBER.",
                              field="parent")

    async def _stored(self, resource: str, constraint: Constraint) -> OrgPolicy | None:
        return await self.core.store.get_org_policy(resource, constraint.name)

    async def _effective(self, resource: str, constraint: Constraint) -> dict[str, Any] | None:
        organization = await self._stored(ORGANIZATION, constraint)
        if resource == ORGANIZATION:
            return effective_spec(constraint, organization.spec if organization else None, None)
        project = await self._stored(resource, constraint)
        return effective_spec(constraint, organization.spec if organization else None,
                              project.spec if project else None)

    async def _write(self, resource: str, constraint: Constraint, spec: dict[str, Any], expected: str | None
                     ) -> OrgPolicy:
        policy = OrgPolicy(resource, constraint.name, spec, new_etag(), self.core.now())
        if not await self.core.store.put_org_policy(policy, expected_etag=expected):
            raise Aborted(CONCURRENT_CHANGE)
        return policy

    # ------------------------------------------------------------ Org Policy v2

    async def get_policy(self, caller: Caller, request: OrgPolicyRequest) -> PlacedOrgPolicy:
        resource, where = await self.parent(caller, request.parent, GET)
        constraint = constraint_named(request.constraint, field="name")
        found = await self._stored(resource, constraint)
        if found is None:
            raise NotFound(f"Policy {where}/policies/{constraint.short} not found.")
        return PlacedOrgPolicy(where, constraint, found)

    async def effective_policy(self, caller: Caller, request: OrgPolicyRequest) -> EffectiveOrgPolicy:
        resource, where = await self.parent(caller, request.parent, GET)
        constraint = constraint_named(request.constraint, field="name")
        return EffectiveOrgPolicy(where, constraint, await self._effective(resource, constraint))

    async def list_policies(self, caller: Caller, parent: str) -> OrgPolicyList:
        resource, where = await self.parent(caller, parent, LIST)
        return OrgPolicyList(where, await self._listed(resource, where))

    async def list_constraints(self, caller: Caller, parent: str) -> ConstraintList:
        _resource, where = await self.parent(caller, parent, CONSTRAINTS_LIST)
        return ConstraintList(where, tuple(CONSTRAINTS.values()))

    async def _listed(self, resource: str, where: str) -> tuple[PlacedOrgPolicy, ...]:
        return tuple(PlacedOrgPolicy(where, CONSTRAINTS[p.constraint], p)
                     for p in await self.core.store.list_org_policies(resource) if p.constraint in CONSTRAINTS)

    @staticmethod
    def _v2_spec(request: WriteOrgPolicyRequest, constraint: Constraint) -> dict[str, Any]:
        if request.unsupported:
            field = f"policy.{request.unsupported[0]}"
            raise InvalidArgument(f"{field} is not supported by keyless.", field=field)
        return parse_spec(constraint, request.spec)

    async def create_policy(self, caller: Caller, request: WriteOrgPolicyRequest) -> PlacedOrgPolicy:
        """CreatePolicy: 409 ALREADY_EXISTS when the constraint already has a policy there."""
        parent = request.parent
        resource, where = await self.parent(caller, parent, CREATE)
        full = request.name
        if full is None or "/policies/" not in full:
            raise InvalidArgument("policy.name must be PARENT/policies/CONSTRAINT.", field="policy.name")
        named_parent, _, short = full.rpartition("/policies/")
        if named_parent != parent and named_parent != where:
            raise InvalidArgument(f"policy.name {full} is not under {parent}.", field="policy.name")
        constraint = constraint_named(short, field="policy.name")
        spec = self._v2_spec(request, constraint)
        policy = OrgPolicy(resource, constraint.name, spec, new_etag(), self.core.now())
        if not await self.core.store.put_org_policy(policy, expected_etag=EMPTY_ETAG):
            raise AlreadyExists(f"Policy {where}/policies/{constraint.short} already exists.",
                                resource_name=f"{where}/policies/{constraint.short}")
        return PlacedOrgPolicy(where, constraint, policy)

    async def update_policy(self, caller: Caller, request: WriteOrgPolicyRequest) -> PlacedOrgPolicy:
        """UpdatePolicy (PATCH): creates the policy when there is none; an etag given must be the current one (the
        Policy's ``etag`` or its ``spec.etag``, where GET answers it; both given must agree)."""
        parent = request.parent
        resource, where = await self.parent(caller, parent, UPDATE)
        constraint = constraint_named(request.constraint, field="name")
        full = request.name
        if full is not None and full not in (f"{parent}/policies/{constraint.short}",
                                             f"{where}/policies/{constraint.short}",
                                             f"{parent}/policies/{constraint.name}"):
            raise InvalidArgument(f"policy.name must be {where}/policies/{constraint.short}.", field="policy.name")
        given = {e for e in (request.etag, request.spec_etag) if e is not None}
        if len(given) > 1:
            raise Aborted(CONCURRENT_CHANGE)
        spec = self._v2_spec(request, constraint)
        return PlacedOrgPolicy(where, constraint, await self._write(resource, constraint, spec,
                                                                    given.pop() if given else None))

    async def delete_policy(self, caller: Caller, request: OrgPolicyRequest) -> None:
        resource, where = await self.parent(caller, request.parent, DELETE)
        constraint = constraint_named(request.constraint, field="name")
        found = await self._stored(resource, constraint)
        if found is None:
            raise NotFound(f"Policy {where}/policies/{constraint.short} not found.")
        if request.etag is not None and canonical_etag(found.etag) != request.etag:
            raise Aborted(CONCURRENT_CHANGE)
        await self.core.store.delete_org_policy(resource, constraint.name)

    # ------------------------------------------------------------ Resource Manager v1

    async def v1_get(self, caller: Caller, request: OrgPolicyRequest) -> PlacedOrgPolicy:
        resource, where = await self.parent(caller, request.parent, GET)
        constraint = constraint_named(request.constraint)
        return PlacedOrgPolicy(where, constraint, await self._stored(resource, constraint))

    async def v1_effective(self, caller: Caller, request: OrgPolicyRequest) -> EffectiveOrgPolicy:
        resource, where = await self.parent(caller, request.parent, GET)
        constraint = constraint_named(request.constraint)
        return EffectiveOrgPolicy(where, constraint, await self._effective(resource, constraint))

    async def v1_set(self, caller: Caller, request: SetOrgPolicyV1Request) -> PlacedOrgPolicy:
        resource, where = await self.parent(caller, request.parent, SET_V1)
        constraint = constraint_named(request.constraint, field="policy.constraint")
        spec = spec_from_v1(constraint, request.policy)
        audit.note_request(constraint=constraint.name)
        return PlacedOrgPolicy(where, constraint, await self._write(resource, constraint, spec, request.etag))

    async def v1_clear(self, caller: Caller, request: OrgPolicyRequest) -> None:
        resource, _where = await self.parent(caller, request.parent, SET_V1)
        constraint = constraint_named(request.constraint)
        found = await self._stored(resource, constraint)
        if found is not None:
            if request.etag is not None and canonical_etag(found.etag) != request.etag:
                raise Aborted(CONCURRENT_CHANGE)
            await self.core.store.delete_org_policy(resource, constraint.name)
        elif request.etag not in (None, EMPTY_ETAG):
            raise Aborted(CONCURRENT_CHANGE)

    async def v1_list(self, caller: Caller, parent: str) -> OrgPolicyList:
        resource, where = await self.parent(caller, parent, LIST)
        return OrgPolicyList(where, await self._listed(resource, where))

    async def v1_constraints(self, caller: Caller, parent: str) -> ConstraintList:
        _resource, where = await self.parent(caller, parent, CONSTRAINTS_LIST)
        return ConstraintList(where, tuple(CONSTRAINTS.values()))
