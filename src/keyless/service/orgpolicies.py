"""Organization policies on projects and on the installation's organization: Org Policy v2 and Resource Manager
v1's org-policy methods (two views of the same stored policies), the effective policy, and the checks the
emulated constraints make (``keyless.domain.constraints``).

A project's policies are read and written with the ``orgpolicy.*`` permissions on the project (``roles/owner``,
``roles/orgpolicy.policyAdmin``, ``roles/iam.securityAdmin``). The organization (``organizations/NUMBER``, the
installation's organization number) has no IAM policy of its own in keyless: its policies are the owner's, as
every other installation-wide setting (``keyless.admin``).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    default_rules,
    effective_spec,
    key_expiry_seconds,
    list_allows,
    parse_spec,
    spec_from_v1,
    v1_view,
)
from keyless.domain.fields import check_fields
from keyless.domain.lifetimes import LIFETIME_EXTENSION_CONSTRAINT, format_timestamp
from keyless.domain.numbers import is_ascii_digits
from keyless.domain.policy import EMPTY_ETAG, canonical_etag, new_etag
from keyless.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from keyless.service import audit
from keyless.service.core import Caller, Core
from keyless.service.policies import CONCURRENT_CHANGE
from keyless.storage.base import OrgPolicy, ServiceAccount

ORGANIZATION = "organizations/-"  # where the organization's policies are stored
ADMIN_PERMISSION = "keyless.admin"
V2_POLICY_FIELDS = ("name", "spec", "dryRunSpec", "etag", "alternate")
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


def _expected_v2_etag(body: Mapping[str, Any], spec: Mapping[str, Any]) -> str | None:
    """The etag an UpdatePolicy request expects: the Policy's ``etag`` or its ``spec.etag`` (where GET answers it);
    both given must agree."""
    given = {e for e in (given_etag(body.get("etag"), "policy.etag"), given_etag(spec.get("etag"), "policy.spec.etag"))
             if e is not None}
    if len(given) > 1:
        raise Aborted(CONCURRENT_CHANGE)
    return given.pop() if given else None


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

    @staticmethod
    def v2_json(where: str, policy: OrgPolicy) -> dict[str, Any]:
        constraint = CONSTRAINTS[policy.constraint]
        spec: dict[str, Any] = {"etag": policy.etag, "updateTime": format_timestamp(policy.updated_at)}
        if policy.spec.get("rules"):
            spec["rules"] = policy.spec["rules"]
        for flag in ("inheritFromParent", "reset"):
            if policy.spec.get(flag):
                spec[flag] = True
        return {"name": f"{where}/policies/{constraint.short}", "spec": spec, "etag": policy.etag}

    async def get_policy(self, caller: Caller, parent: str, name: str) -> dict[str, Any]:
        resource, where = await self.parent(caller, parent, GET)
        constraint = constraint_named(name, field="name")
        found = await self._stored(resource, constraint)
        if found is None:
            raise NotFound(f"Policy {where}/policies/{constraint.short} not found.")
        return self.v2_json(where, found)

    async def effective_policy(self, caller: Caller, parent: str, name: str) -> dict[str, Any]:
        resource, where = await self.parent(caller, parent, GET)
        constraint = constraint_named(name, field="name")
        spec = await self._effective(resource, constraint)
        return {"name": f"{where}/policies/{constraint.short}",
                "spec": {"rules": spec["rules"] if spec is not None else default_rules(constraint)}}

    async def list_policies(self, caller: Caller, parent: str) -> dict[str, Any]:
        resource, where = await self.parent(caller, parent, LIST)
        found = [p for p in await self.core.store.list_org_policies(resource) if p.constraint in CONSTRAINTS]
        return {"policies": [self.v2_json(where, p) for p in found]} if found else {}

    async def list_constraints(self, caller: Caller, parent: str) -> dict[str, Any]:
        _resource, where = await self.parent(caller, parent, CONSTRAINTS_LIST)
        out = []
        for constraint in CONSTRAINTS.values():
            item: dict[str, Any] = {"name": f"{where}/constraints/{constraint.short}",
                                    "displayName": constraint.display_name, "description": constraint.description,
                                    "constraintDefault": constraint.default, "supportsDryRun": False}
            if constraint.kind == "boolean":
                item["booleanConstraint"] = {}
            else:
                item["listConstraint"] = {"supportsIn": False, "supportsUnder": False}
            out.append(item)
        return {"constraints": out}

    def _v2_input(self, body: Mapping[str, Any], constraint: Constraint) -> dict[str, Any]:
        check_fields(body, V2_POLICY_FIELDS, "policy")
        for unsupported in ("dryRunSpec", "alternate"):
            if body.get(unsupported) not in (None, {}):
                raise InvalidArgument(f"policy.{unsupported} is not supported by keyless.",
                                      field=f"policy.{unsupported}")
        return parse_spec(constraint, body.get("spec"))

    async def create_policy(self, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """CreatePolicy: 409 ALREADY_EXISTS when the constraint already has a policy there."""
        resource, where = await self.parent(caller, parent, CREATE)
        full = body.get("name")
        if not isinstance(full, str) or "/policies/" not in full:
            raise InvalidArgument("policy.name must be PARENT/policies/CONSTRAINT.", field="policy.name")
        named_parent, _, short = full.rpartition("/policies/")
        if named_parent != parent and named_parent != where:
            raise InvalidArgument(f"policy.name {full} is not under {parent}.", field="policy.name")
        constraint = constraint_named(short, field="policy.name")
        spec = self._v2_input(body, constraint)
        policy = OrgPolicy(resource, constraint.name, spec, new_etag(), self.core.now())
        if not await self.core.store.put_org_policy(policy, expected_etag=EMPTY_ETAG):
            raise AlreadyExists(f"Policy {where}/policies/{constraint.short} already exists.",
                                resource_name=f"{where}/policies/{constraint.short}")
        return self.v2_json(where, policy)

    async def update_policy(self, caller: Caller, parent: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """UpdatePolicy (PATCH): creates the policy when there is none; an etag given must be the current one."""
        resource, where = await self.parent(caller, parent, UPDATE)
        constraint = constraint_named(name, field="name")
        full = body.get("name")
        if full is not None and (not isinstance(full, str)
                                 or full not in (f"{parent}/policies/{constraint.short}",
                                                 f"{where}/policies/{constraint.short}",
                                                 f"{parent}/policies/{constraint.name}")):
            raise InvalidArgument(f"policy.name must be {where}/policies/{constraint.short}.", field="policy.name")
        spec_body = body.get("spec")
        expected = _expected_v2_etag(body, spec_body if isinstance(spec_body, Mapping) else {})
        spec = self._v2_input(body, constraint)
        return self.v2_json(where, await self._write(resource, constraint, spec, expected))

    async def delete_policy(self, caller: Caller, parent: str, name: str, etag: str | None) -> None:
        resource, where = await self.parent(caller, parent, DELETE)
        constraint = constraint_named(name, field="name")
        expected = given_etag(etag, "etag")
        found = await self._stored(resource, constraint)
        if found is None:
            raise NotFound(f"Policy {where}/policies/{constraint.short} not found.")
        if expected is not None and canonical_etag(found.etag) != expected:
            raise Aborted(CONCURRENT_CHANGE)
        await self.core.store.delete_org_policy(resource, constraint.name)

    # ------------------------------------------------------------ Resource Manager v1

    @staticmethod
    def v1_json(constraint: Constraint, policy: OrgPolicy | None) -> dict[str, Any]:
        if policy is None:  # as Google answers a constraint with no policy: the etag to create one with
            return {"constraint": constraint.name, "etag": EMPTY_ETAG}
        return {"constraint": constraint.name, "etag": policy.etag, "updateTime": format_timestamp(policy.updated_at),
                **v1_view(constraint, policy.spec)}

    async def v1_get(self, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, ("constraint",), "request")
        resource, _where = await self.parent(caller, parent, GET)
        constraint = constraint_named(body.get("constraint"))
        return self.v1_json(constraint, await self._stored(resource, constraint))

    async def v1_effective(self, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, ("constraint",), "request")
        resource, _where = await self.parent(caller, parent, GET)
        constraint = constraint_named(body.get("constraint"))
        spec = await self._effective(resource, constraint)
        return {"constraint": constraint.name, **v1_view(constraint, spec)}

    async def v1_set(self, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, ("policy", "updateMask"), "request")
        resource, _where = await self.parent(caller, parent, SET_V1)
        policy = body.get("policy")
        if not isinstance(policy, Mapping):
            raise InvalidArgument("policy is required.", field="policy")
        constraint = constraint_named(policy.get("constraint"), field="policy.constraint")
        spec = spec_from_v1(constraint, policy)
        expected = given_etag(policy.get("etag"), "policy.etag")
        audit.note_request(constraint=constraint.name)
        return self.v1_json(constraint, await self._write(resource, constraint, spec, expected))

    async def v1_clear(self, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, ("constraint", "etag"), "request")
        resource, _where = await self.parent(caller, parent, SET_V1)
        constraint = constraint_named(body.get("constraint"))
        expected = given_etag(body.get("etag"), "etag")
        found = await self._stored(resource, constraint)
        if found is not None:
            if expected is not None and canonical_etag(found.etag) != expected:
                raise Aborted(CONCURRENT_CHANGE)
            await self.core.store.delete_org_policy(resource, constraint.name)
        elif expected not in (None, EMPTY_ETAG):
            raise Aborted(CONCURRENT_CHANGE)
        return {}

    async def v1_list(self, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, ("pageSize", "pageToken"), "request")
        resource, _where = await self.parent(caller, parent, LIST)
        found = [p for p in await self.core.store.list_org_policies(resource) if p.constraint in CONSTRAINTS]
        return {"policies": [self.v1_json(CONSTRAINTS[p.constraint], p) for p in found]} if found else {}

    async def v1_constraints(self, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, ("pageSize", "pageToken"), "request")
        await self.parent(caller, parent, CONSTRAINTS_LIST)
        out = []
        for constraint in CONSTRAINTS.values():
            item: dict[str, Any] = {"name": constraint.name, "displayName": constraint.display_name,
                                    "description": constraint.description,
                                    "constraintDefault": constraint.default}
            if constraint.kind == "boolean":
                item["booleanConstraint"] = {}
            else:
                item["listConstraint"] = {}
            out.append(item)
        return {"constraints": out}
