"""IAM allow policies on service accounts and projects: get, set (etag compare-and-swap), test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keyless.domain.fields import check_fields
from keyless.domain.policy import (
    Policy,
    apply_mask_fields,
    check_requested_version,
    new_etag,
    parse_policy,
    parse_version,
)
from keyless.domain.roles import ALL_PERMISSIONS
from keyless.errors import Aborted, InvalidArgument, PermissionDenied
from keyless.service.admin_requests import GetIamPolicyRequest, SetIamPolicyRequest, TestIamPermissionsRequest
from keyless.service.core import Caller, Core, account_resource, project_resource
from keyless.service.policy_requests import (
    GetProjectIamPolicyRequest,
    SetProjectIamPolicyRequest,
    TestProjectIamPermissionsRequest,
)

if TYPE_CHECKING:  # accounts.py imports this module (through grants.py): Keyless hands Policies its Accounts
    from keyless.service.accounts import Accounts

CONCURRENT_CHANGE = ("There were concurrent policy changes. Please retry the whole read-modify-write with "
                     "exponential backoff.")
MAX_TEST_PERMISSIONS = 100


async def store_policy(core: Core, resource: str, policy: Policy, *, expected_etag: str | None) -> Policy:
    """Write ``policy`` with a fresh etag; with ``expected_etag`` only if nobody wrote in between."""
    stored = Policy(policy.version, policy.bindings, new_etag())
    body: dict[str, Any] = {"version": stored.version, "bindings": [b.to_json() for b in stored.bindings]}
    if not await core.store.put_policy(resource, body, stored.etag, expected_etag=expected_etag):
        raise Aborted(CONCURRENT_CHANGE)
    return stored


def requested_version(query: Mapping[str, str], body: Mapping[str, Any]) -> int:
    """``options.requestedPolicyVersion`` of ``getIamPolicy`` (the query parameter wins over the body's): 0, 1
    or 3, else 400 before anything is looked up."""
    raw: Any = query.get("options.requestedPolicyVersion")
    options = body.get("options")
    if options is not None and not isinstance(options, Mapping):
        raise InvalidArgument("Invalid value at 'options': expected an object.", field="options")
    if isinstance(options, Mapping):
        check_fields(options, ("requestedPolicyVersion",), "options")
        if raw is None:
            raw = options.get("requestedPolicyVersion")
    if raw is None or raw == "":
        return 0
    return parse_version(raw, what="requestedPolicyVersion", field="options.requestedPolicyVersion")


def permissions_of(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``permissions`` of a testIamPermissions JSON body, their form checked (a list of strings)."""
    raw = body.get("permissions") or []
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise InvalidArgument("permissions must be a list of strings.", field="permissions")
    return tuple(raw)


def check_permissions(permissions: tuple[str, ...]) -> tuple[str, ...]:
    """The permissions a testIamPermissions may ask about: at most 100, no wildcards."""
    if len(permissions) > MAX_TEST_PERMISSIONS:
        raise InvalidArgument(f"At most {MAX_TEST_PERMISSIONS} permissions can be tested at once.",
                              field="permissions")
    for permission in permissions:
        if "*" in permission:
            raise InvalidArgument(f"Permissions with wildcards ({permission}) are not allowed.", field="permissions")
    return permissions


def policy_of(body: Mapping[str, Any]) -> Policy:
    """The ``policy`` of a setIamPolicy JSON body, parsed with the domain's rules."""
    raw = body.get("policy")
    if raw is None:
        raise InvalidArgument("policy is required.", field="policy")
    return parse_policy(raw)


class Policies:
    def __init__(self, core: Core, accounts: Accounts) -> None:
        self.core = core
        self.accounts = accounts

    async def _set(self, resource: str, new: Policy, mask: tuple[str, ...] | None) -> Policy:
        current = await self.core.load_policy(resource)
        merged = apply_mask_fields(current, new, mask)
        await self._check_members_exist(merged)
        expected = new.etag or None
        if expected is not None and expected != current.etag:
            raise Aborted(CONCURRENT_CHANGE)
        return await store_policy(self.core, resource, merged, expected_etag=expected)

    async def _check_members_exist(self, policy: Policy) -> None:
        for binding in policy.bindings:
            for member in binding.members:
                if member.startswith("serviceAccount:"):
                    email = member.split(":", 1)[1]
                    if email.endswith(".gserviceaccount.com") and await self.core.resolve_account(email) is None:
                        raise InvalidArgument(f"Service account {email} does not exist.",
                                              field="policy.bindings.members")

    # service accounts
    async def get_for_account(self, caller: Caller, request: GetIamPolicyRequest) -> Policy:
        permission = "iam.serviceAccounts.getIamPolicy"
        account = await self.accounts.lookup(caller, request.account, permission)
        # The name as the caller wrote it: the only name a denial repeats.
        await self.core.require_on_account(caller, permission, account, request.account.name)
        policy = await self.core.load_policy(account_resource(account))
        check_requested_version(policy, request.requested_version)
        return policy

    async def set_for_account(self, caller: Caller, request: SetIamPolicyRequest) -> Policy:
        permission = "iam.serviceAccounts.setIamPolicy"
        account = await self.accounts.lookup(caller, request.account, permission)
        await self.core.require_on_account(caller, permission, account, request.account.name)
        return await self._set(account_resource(account), request.policy, request.update_mask)

    async def test_on_account(self, caller: Caller, request: TestIamPermissionsRequest) -> list[str]:
        """The permissions asked about that the caller holds on the account; none on an account that is not there
        (``Accounts.find`` says when the caller may not be told that it is not)."""
        account = await self.accounts.find(caller, request.account)
        permissions = check_permissions(request.permissions)
        if account is None:
            return []
        identities = await self.core.identities(caller.principal)
        return [p for p in permissions
                if p in ALL_PERMISSIONS and await self.core.allowed_on_account(identities, p, account)]

    # projects
    async def _project_id(self, caller: Caller, project: str, permission: str) -> str:
        found = await self.core.store.get_project(project)
        if found is None:
            # Resource Manager answers 403 for projects that do not exist or that the caller cannot see.
            await self.core.explain_missing_project(caller.principal.member, project, permission)
            raise PermissionDenied("The caller does not have permission")
        return found.project_id

    async def get_for_project(self, caller: Caller, request: GetProjectIamPolicyRequest) -> Policy:
        project_id = await self._project_id(caller, request.project, "resourcemanager.projects.getIamPolicy")
        await self.core.require_on_project(caller, "resourcemanager.projects.getIamPolicy", project_id)
        policy = await self.core.load_policy(project_resource(project_id))
        check_requested_version(policy, request.requested_version)
        return policy

    async def set_for_project(self, caller: Caller, request: SetProjectIamPolicyRequest) -> Policy:
        project_id = await self._project_id(caller, request.project, "resourcemanager.projects.setIamPolicy")
        await self.core.require_on_project(caller, "resourcemanager.projects.setIamPolicy", project_id)
        return await self._set(project_resource(project_id), request.policy, request.update_mask)

    async def test_on_project(self, caller: Caller, request: TestProjectIamPermissionsRequest) -> list[str]:
        project_id = await self._project_id(caller, request.project, "resourcemanager.projects.get")
        permissions = check_permissions(request.permissions)
        identities = await self.core.identities(caller.principal)
        return [p for p in permissions
                if p in ALL_PERMISSIONS and await self.core.allowed_on_project(identities, p, project_id)]
