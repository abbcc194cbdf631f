"""Policy Troubleshooter: why a principal holds a permission on a service account or a project, or does not; and
a whole IAM Credentials delegation chain explained hop by hop.

What an asker is shown is what it may read: each policy is explained only when the asker holds its
``getIamPolicy`` permission (``iam.serviceAccounts.getIamPolicy`` on an account, decided on the account's and
its project's policies; ``resourcemanager.projects.getIamPolicy`` on a project); a policy it may not read is
listed as UNKNOWN_INFO, as Google lists it, and an asker who may read none of them is refused. The owner
(``keyless.admin`` on the default project) reads every policy. A chain is explained only to an asker who may
read the policy of every account on it (``roles/iam.securityReviewer`` on the project gives that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.domain import federation, roles
from keyless.domain.conditions import RequestContext
from keyless.domain.delegation import parse_delegates, plan_chain
from keyless.domain.lifetimes import parse_timestamp
from keyless.domain.names import AccountRef, parse_account_name
from keyless.domain.policy import Policy, Principal, validate_member
from keyless.domain.troubleshoot import AccessExplanation, summary, troubleshoot
from keyless.errors import InvalidArgument, NotFound, PermissionDenied
from keyless.service.admin import ADMIN_PERMISSION
from keyless.service.core import (
    PROJECT_RESOURCE_TYPE,
    SA_RESOURCE_TYPE,
    Caller,
    Core,
    account_condition_name,
    account_resource,
    in_named_project,
    project_resource,
)
from keyless.storage.base import ServiceAccount

IAM_PREFIX = "//iam.googleapis.com/"
CRM_PREFIX = "//cloudresourcemanager.googleapis.com/"
CRM_SERVICE = "cloudresourcemanager.googleapis.com"
ACCOUNT_POLICY_READ = "iam.serviceAccounts.getIamPolicy"
PROJECT_POLICY_READ = "resourcemanager.projects.getIamPolicy"
CHAIN_METHODS = {
    "generateAccessToken": roles.PERM_GET_ACCESS_TOKEN,
    "generateIdToken": roles.PERM_GET_ID_TOKEN,
    "signBlob": roles.PERM_SIGN_BLOB,
    "signJwt": roles.PERM_SIGN_JWT,
}


@dataclass(frozen=True, slots=True)
class ConditionContext:
    """What a request's ``conditionContext`` gives conditions: the time, and the resource's name, type and
    service (keyless's own for the resource when not given)."""

    time: float | None = None
    resource_name: str | None = None
    resource_type: str | None = None
    resource_service: str | None = None


@dataclass(frozen=True, slots=True)
class Troubleshooting:
    """The answer to one access tuple."""

    principal: str  # as the request gave it
    member: str  # as a binding names it
    full_resource_name: str
    permission: str
    explanation: AccessExplanation
    summary: str


@dataclass(frozen=True, slots=True)
class ChainHop:
    index: int  # 1-based
    grantee: str  # the member who needs the permission
    account: str  # the account's name, as the request gave it
    permission: str
    found: Troubleshooting | None  # None: no such account
    missing: str = ""

    @property
    def granted(self) -> bool:
        return self.found is not None and self.found.explanation.granted


@dataclass(frozen=True, slots=True)
class ChainExplanation:
    principal: str
    method: str
    hops: tuple[ChainHop, ...]

    @property
    def failing_hop(self) -> ChainHop | None:
        return next((hop for hop in self.hops if not hop.granted), None)


def parse_principal(raw: object, field: str = "accessTuple.principal") -> tuple[Principal, frozenset[str]]:
    """The principal of a request (an email, as Google takes it, or a member: ``user:``, ``serviceAccount:``,
    ``principal://``), and the principal sets it may be in that only its token would tell."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidArgument(f"{field} is required: the email of the principal to check.", field=field)
    text = raw.strip()
    if text.startswith("principal://"):
        named = federation.subject_of(text)
        if named is None:
            raise InvalidArgument(f"Invalid {field} '{text}': a federated principal is principal://"
                                  "iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/S.",
                                  field=field)
        pool, subject = named
        identity = federation.FederatedIdentity(f"{pool}/providers/-", subject)
        base = f"principalSet://{federation.IAM_HOST}/{pool}/"
        return Principal.of_federated(identity), frozenset({base + "group/", base + "attribute."})
    kind, sep, email = text.partition(":")
    if not sep:
        kind, email = ("serviceAccount" if text.lower().endswith(".gserviceaccount.com") else "user"), text
    if kind not in ("user", "serviceAccount"):
        raise InvalidArgument(f"Invalid {field} '{text}': give an email, user:EMAIL, serviceAccount:EMAIL or a "
                              "principal:// identifier.", field=field)
    member = validate_member(f"{kind}:{email}")
    return Principal(kind, member.partition(":")[2]), frozenset()


def parse_permission(raw: object, field: str = "accessTuple.permission") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidArgument(f"{field} is required, e.g. iam.serviceAccounts.getAccessToken.", field=field)
    permission = raw.strip()
    if permission.count(".") < 2 or any(c.isspace() or c in "*/" for c in permission):
        raise InvalidArgument(f"Invalid {field} '{permission}': expected service.resource.verb.", field=field)
    return permission


def parse_condition_context(raw: object) -> ConditionContext:
    if raw is None:
        return ConditionContext()
    if not isinstance(raw, Mapping):
        raise InvalidArgument("accessTuple.conditionContext must be an object.", field="accessTuple.conditionContext")
    request = raw.get("request") or {}
    resource = raw.get("resource") or {}
    if not isinstance(request, Mapping) or not isinstance(resource, Mapping):
        raise InvalidArgument("accessTuple.conditionContext.request and .resource must be objects.",
                              field="accessTuple.conditionContext")
    when = request.get("receiveTime")
    time: float | None = None
    if when is not None:
        try:
            time = parse_timestamp(str(when))
        except ValueError:
            raise InvalidArgument(f"Invalid accessTuple.conditionContext.request.receiveTime '{when}': expected an "
                                  "RFC 3339 time.", field="accessTuple.conditionContext.request.receiveTime") from None

    def text(name: str) -> str | None:
        value = resource.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise InvalidArgument(f"accessTuple.conditionContext.resource.{name} must be a string.",
                                  field=f"accessTuple.conditionContext.resource.{name}")
        return value

    return ConditionContext(time, text("name"), text("type"), text("service"))


class Troubleshooter:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _is_owner(self, identities: frozenset[str]) -> bool:
        return await self.core.allowed_on_project(identities, ADMIN_PERMISSION, self.core.settings.default_project)

    def _context(self, given: ConditionContext, name: str, kind: str, service: str) -> RequestContext:
        return RequestContext(given.time if given.time is not None else self.core.now(),
                              given.resource_name or name, given.resource_type or kind,
                              given.resource_service or service)

    async def troubleshoot(self, caller: Caller, principal_text: object, resource: object, permission_text: object,
                           context: ConditionContext) -> Troubleshooting:
        """``iam:troubleshoot``: explain ``permission`` for the principal on ``resource`` (a full resource name)."""
        principal, undecidable = parse_principal(principal_text)
        permission = parse_permission(permission_text)
        if not isinstance(resource, str) or not resource:
            raise InvalidArgument("accessTuple.fullResourceName is required.", field="accessTuple.fullResourceName")
        asker = await self.core.identities(caller.principal)
        owner = await self._is_owner(asker)
        if resource.startswith(IAM_PREFIX):
            ref = _account_ref(resource[len(IAM_PREFIX):])
            account = await self._account(caller, ref)
            return await self._on_account(principal, str(principal_text), undecidable, permission, account, resource,
                                          context, asker, owner, refuse_as=ref.name)
        if resource.startswith(CRM_PREFIX) and resource[len(CRM_PREFIX):].startswith("projects/"):
            project = resource[len(CRM_PREFIX) + len("projects/"):]
            found = await self.core.store.get_project(project) if project and "/" not in project else None
            if found is None:
                raise PermissionDenied("The caller does not have permission")
            readable = owner or await self.core.allowed_on_project(asker, PROJECT_POLICY_READ, found.project_id)
            if not readable:
                raise PermissionDenied.iam(PROJECT_POLICY_READ, project_resource(found.project_id))
            ctx = self._context(context, project_resource(found.project_id), PROJECT_RESOURCE_TYPE, CRM_SERVICE)
            policies = [(resource, await self.core.load_policy(project_resource(found.project_id)))]
            return await self._explain(principal, str(principal_text), undecidable, permission, resource, policies,
                                       ctx)
        raise InvalidArgument(f"Unsupported accessTuple.fullResourceName '{resource}': keyless troubleshoots "
                              f"{IAM_PREFIX}projects/P/serviceAccounts/EMAIL_OR_ID and {CRM_PREFIX}projects/P.",
                              field="accessTuple.fullResourceName")

    async def _account(self, caller: Caller, ref: AccountRef) -> ServiceAccount:
        account = await self.core.resolve_account(ref)
        if account is None or not await in_named_project(self.core, ref, account):
            raise await self.core.missing_account(caller, ref, ACCOUNT_POLICY_READ)
        return account

    async def _on_account(self, principal: Principal, given: str, undecidable: frozenset[str], permission: str,
                          account: ServiceAccount, full_name: str, context: ConditionContext,
                          asker: frozenset[str], owner: bool, *, refuse_as: str) -> Troubleshooting:
        account_readable = owner or await self.core.allowed_on_account(asker, ACCOUNT_POLICY_READ, account)
        project_readable = owner or await self.core.allowed_on_project(asker, PROJECT_POLICY_READ,
                                                                       account.project_id)
        if not account_readable:
            # The account's own policy is the one the question is about: without it there is nothing to explain.
            raise PermissionDenied.iam(ACCOUNT_POLICY_READ, refuse_as)
        policies: list[tuple[str, Policy | None]] = [
            (full_name, await self.core.load_policy(account_resource(account))),
            (f"{CRM_PREFIX}projects/{account.project_id}",
             await self.core.load_policy(project_resource(account.project_id)) if project_readable else None),
        ]
        ctx = self._context(context, account_condition_name(account), SA_RESOURCE_TYPE, "iam.googleapis.com")
        return await self._explain(principal, given, undecidable, permission, full_name, policies, ctx)

    async def _explain(self, principal: Principal, given: str, undecidable: frozenset[str], permission: str,
                       full_name: str, policies: Sequence[tuple[str, Policy | None]], ctx: RequestContext
                       ) -> Troubleshooting:
        identities = await self.core.identities(principal)
        explanation = troubleshoot(policies, identities, permission, ctx, undecidable)
        return Troubleshooting(given, principal.member, full_name, permission, explanation,
                               summary(explanation, principal.member, permission, full_name))

    async def explain_chain(self, caller: Caller, body: Mapping[str, Any]) -> ChainExplanation:
        """A credentials call (principal, delegates, target account, method) explained hop by hop: the principal
        needs ``implicitDelegation`` on the first delegate, each delegate on the next, the last the method's
        permission on the target. Every hop is explained; the first not granted is the one that fails."""
        principal, undecidable = parse_principal(body.get("principal"), "principal")
        method = body.get("method", "generateAccessToken")
        if method not in CHAIN_METHODS:
            raise InvalidArgument(f"Invalid method {method!r}: one of {', '.join(CHAIN_METHODS)}.", field="method")
        target_raw = body.get("serviceAccount")
        if not isinstance(target_raw, str) or not target_raw:
            raise InvalidArgument("serviceAccount is required: the account whose credentials are asked for.",
                                  field="serviceAccount")
        target = _account_ref(target_raw if "/" in target_raw else f"projects/-/serviceAccounts/{target_raw}",
                              field="serviceAccount")
        delegates = parse_delegates(body.get("delegates"))
        hops = plan_chain(delegates, target, CHAIN_METHODS[method])
        asker = await self.core.identities(caller.principal)
        owner = await self._is_owner(asker)
        explained: list[ChainHop] = []
        grantee, grantee_undecidable, given = principal, undecidable, str(body.get("principal"))
        for index, hop in enumerate(hops, start=1):
            account = await self.core.resolve_account(hop.resource)
            if account is None or not await in_named_project(self.core, hop.resource, account):
                error = await self.core.missing_account(caller, hop.resource, ACCOUNT_POLICY_READ)
                if not isinstance(error, NotFound) and not owner:
                    raise error
                explained.append(ChainHop(index, grantee.member, hop.resource.name, hop.permission, None,
                                          f"no account {hop.resource.account}"))
                grantee = Principal("serviceAccount", hop.resource.account.lower())
            else:
                full_name = f"{IAM_PREFIX}projects/{account.project_id}/serviceAccounts/{account.email}"
                found = await self._on_account(grantee, given, grantee_undecidable, hop.permission, account,
                                               full_name, ConditionContext(), asker, owner,
                                               refuse_as=hop.resource.name)
                explained.append(ChainHop(index, grantee.member, hop.resource.name, hop.permission, found))
                grantee = Principal("serviceAccount", account.email)
            grantee_undecidable, given = frozenset(), grantee.email
        return ChainExplanation(principal.member, str(method), tuple(explained))


def _account_ref(name: str, field: str = "accessTuple.fullResourceName") -> AccountRef:
    return parse_account_name(name, field=field)

