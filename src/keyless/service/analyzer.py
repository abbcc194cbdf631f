"""Who can do what: Cloud Asset Inventory's ``analyzeIamPolicy`` over keyless's projects and accounts, and
keyless's transitive view, every principal that can obtain an account's credentials (directly, or through other
accounts: by holding their credentials in turn, or by naming them as delegates).

Both read the store in one pass: every stored policy that has bindings (``Store.policies_mentioning``), the
accounts of the projects concerned (listed once) and the groups (listed once); the answer is then worked out in
memory, never with a query per principal.

What an asker is shown is what it may read, as in the troubleshooter: a project's policy needs
``resourcemanager.projects.getIamPolicy`` on it, an account's ``iam.serviceAccounts.getIamPolicy`` on the account
(the owner reads all). The analysis leaves out what it may not read and says so (``fullyExplored: false`` with a
PERMISSION_DENIED ``nonCriticalErrors`` entry; ``unexplored`` in the transitive view).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keyless.domain import roles
from keyless.domain.conditions import RequestContext
from keyless.domain.lifetimes import parse_timestamp
from keyless.domain.names import parse_account_name
from keyless.domain.policy import Binding, Policy, load_stored_policy
from keyless.errors import InvalidArgument, PermissionDenied
from keyless.service.admin import ADMIN_PERMISSION
from keyless.service.core import (
    PROJECT_RESOURCE_TYPE,
    SA_RESOURCE_TYPE,
    Caller,
    Core,
    account_condition_name,
    in_named_project,
)
from keyless.service.troubleshooter import ACCOUNT_POLICY_READ, CRM_PREFIX, CRM_SERVICE, IAM_PREFIX, PROJECT_POLICY_READ
from keyless.storage.base import Project, ServiceAccount

CREDENTIAL_PERMISSIONS = (roles.PERM_GET_ACCESS_TOKEN, roles.PERM_GET_ID_TOKEN, roles.PERM_SIGN_BLOB,
                          roles.PERM_SIGN_JWT)
LIST_PAGE = 1000
MAX_EXPANDED = 1000  # Google's default expansion per group or resource in the synchronous analyzeIamPolicy


@dataclass(frozen=True, slots=True)
class AttachedBinding:
    """A binding and the resource whose policy holds it."""

    attached: str  # Cloud Asset's full resource name
    binding: Binding
    account: ServiceAccount | None  # the account whose policy it is (None: the project's)


@dataclass
class ProjectView:
    """A project's accounts and every binding of its policies, as read in one pass."""

    project: Project
    accounts: dict[str, ServiceAccount]  # by unique id
    bindings: list[AttachedBinding] = field(default_factory=list)


def project_asset(project: Project) -> str:
    return f"{CRM_PREFIX}projects/{project.number}"


def account_asset(account: ServiceAccount) -> str:
    return f"{IAM_PREFIX}projects/{account.project_id}/serviceAccounts/{account.unique_id}"


class Analyzer:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _is_owner(self, identities: frozenset[str]) -> bool:
        return await self.core.allowed_on_project(identities, ADMIN_PERMISSION, self.core.settings.default_project)

    async def _accounts(self, project_id: str) -> dict[str, ServiceAccount]:
        out: dict[str, ServiceAccount] = {}
        after = ""
        while True:
            page = await self.core.store.list_service_accounts(project_id, after_email=after, limit=LIST_PAGE)
            out.update((a.unique_id, a) for a in page)
            if len(page) < LIST_PAGE:
                return out
            after = page[-1].email

    async def policies(self) -> dict[str, Policy]:
        """Every stored policy with a binding, by the resource it is stored under (one query)."""
        # A policy without bindings grants nothing: only those whose body names "bindings" matter.
        return {stored.resource: load_stored_policy(stored.body, stored.etag)
                for stored in await self.core.store.policies_mentioning('"bindings"')}

    async def _view(self, project: Project, policies: Mapping[str, Policy]) -> ProjectView:
        view = ProjectView(project, await self._accounts(project.project_id))
        own = policies.get(f"projects/{project.project_id}")
        if own is not None:
            view.bindings += [AttachedBinding(project_asset(project), b, None) for b in own.bindings]
        prefix = f"projects/{project.project_id}/serviceAccounts/"
        for resource, policy in policies.items():
            account = view.accounts.get(resource[len(prefix):]) if resource.startswith(prefix) else None
            if account is not None:
                view.bindings += [AttachedBinding(account_asset(account), b, account) for b in policy.bindings]
        return view

    # ------------------------------------------------------------ analyzeIamPolicy

    async def analyze(self, caller: Caller, scope: str, query: Mapping[str, Any]) -> dict[str, Any]:
        """``GET /v1/projects/{project}:analyzeIamPolicy``: the bindings that match the query's identity,
        resource and access selectors, in Cloud Asset Inventory v1's ``AnalyzeIamPolicyResponse`` shape."""
        q = _AnalysisQuery.parse(query)
        project = await self.core.store.get_project(scope)
        if project is None:
            raise PermissionDenied("The caller does not have permission")
        asker = await self.core.identities(caller.principal)
        owner = await self._is_owner(asker)
        if not owner and not await self.core.allowed_on_project(asker, PROJECT_POLICY_READ, project.project_id):
            raise PermissionDenied.iam(PROJECT_POLICY_READ, f"projects/{project.project_id}")
        view = await self._view(project, await self.policies())
        selected = await self._selected(caller, q.resource, view)
        groups = await self.core.store.list_groups()
        identities: frozenset[str] | None = None
        if q.identity is not None:
            identities = frozenset({q.identity, "allUsers", "allAuthenticatedUsers",
                                    *(f"group:{g}" for g in await self.core.store.groups_of(q.identity))})
            if q.identity.startswith("user:"):
                identities |= {f"domain:{q.identity.rpartition('@')[2]}"}
        results: list[dict[str, Any]] = []
        hidden = 0
        readable: dict[str, bool] = {}
        for attached in view.bindings:
            binding = attached.binding
            if selected is not None and attached.attached not in selected:
                continue
            accesses = q.accesses(binding.role)
            if not accesses:
                continue
            if identities is not None and binding.members.isdisjoint(identities):
                continue
            if attached.account is not None and not owner:
                uid = attached.account.unique_id
                if uid not in readable:
                    readable[uid] = await self.core.allowed_on_account(asker, ACCOUNT_POLICY_READ, attached.account)
                if not readable[uid]:
                    hidden += 1
                    continue
            evaluation = q.evaluate(binding, attached, project)
            if evaluation == "FALSE":
                continue
            results.append(_result(attached, binding, accesses, evaluation, q, view, identities, groups, selected))
        analysis: dict[str, Any] = {"analysisQuery": {**q.echo, "scope": f"projects/{scope}"},
                                    "analysisResults": results, "fullyExplored": hidden == 0}
        if hidden:
            analysis["nonCriticalErrors"] = [{"code": "PERMISSION_DENIED", "cause": (
                f"{hidden} binding(s) on service accounts whose policy the caller may not read were left out.")}]
        return {"mainAnalysis": analysis, "fullyExplored": hidden == 0}

    async def _selected(self, caller: Caller, name: str | None, view: ProjectView) -> set[str] | None:
        """The attached resources whose policies apply to the selected resource (it and its project), or None."""
        if name is None:
            return None
        project_names = {f"{CRM_PREFIX}projects/{view.project.project_id}", project_asset(view.project)}
        if name in project_names:
            return {project_asset(view.project)}
        if name.startswith(IAM_PREFIX):
            ref = parse_account_name(name[len(IAM_PREFIX):], field="analysisQuery.resourceSelector.fullResourceName")
            account = await self.core.resolve_account(ref)
            if account is not None and await in_named_project(self.core, ref, account) and \
                    account.project_id == view.project.project_id:
                return {account_asset(account), project_asset(view.project)}
            return set()  # nothing of the scope applies to it
        raise InvalidArgument(f"Unsupported analysisQuery.resourceSelector.fullResourceName '{name}': keyless "
                              "analyzes projects and service accounts.",
                              field="analysisQuery.resourceSelector.fullResourceName")

    # ------------------------------------------------------------ who can impersonate

    async def who_can_impersonate(self, caller: Caller, name: str) -> dict[str, Any]:
        """Every principal that can obtain credentials of the account ``name`` (an email or unique id, or
        ``projects/P/serviceAccounts/X``): by holding a credential permission on it, or on an account that does
        (any length of chain), or ``implicitDelegation`` on an account that can (a delegation chain). The path
        of each is the shortest, one without conditions when there is one."""
        ref = parse_account_name(name if "/" in name else f"projects/-/serviceAccounts/{name}", field="account")
        target = await self.core.resolve_account(ref)
        if target is None or not await in_named_project(self.core, ref, target):
            raise await self.core.missing_account(caller, ref, ACCOUNT_POLICY_READ)
        asker = await self.core.identities(caller.principal)
        owner = await self._is_owner(asker)
        if not owner and not await self.core.allowed_on_account(asker, ACCOUNT_POLICY_READ, target):
            raise PermissionDenied.iam(ACCOUNT_POLICY_READ, ref.name)
        graph = await _Graph.load(self, asker, owner)
        found = graph.paths_to(target, unconditional_only=True)
        for principal, path in graph.paths_to(target, unconditional_only=False).items():
            found.setdefault(principal, path)
        principals = [{"principal": p, "conditional": any("condition" in e for e in path), "path": path}
                      for p, path in sorted(found.items(), key=lambda item: (len(item[1]), item[0]))]
        out: dict[str, Any] = {"serviceAccount": target.email, "principals": principals}
        if graph.unexplored:
            out["unexplored"] = sorted(graph.unexplored)
        return out


class _Graph:
    """The credential grants of every account (its own policy's and its project's), read in one pass."""

    def __init__(self) -> None:
        self.accounts_by_email: dict[str, ServiceAccount] = {}
        self.grants: dict[str, list[AttachedBinding]] = {}  # account unique id -> bindings granting credentials
        self.project_grants: dict[str, list[AttachedBinding]] = {}
        self.groups: dict[str, list[str]] = {}
        self.unexplored: set[str] = set()
        self.hidden_accounts: set[str] = set()

    @classmethod
    async def load(cls, analyzer: Analyzer, asker: frozenset[str], owner: bool) -> _Graph:
        core = analyzer.core
        graph = cls()
        policies = await analyzer.policies()
        graph.groups = {f"group:{g}": members for g, members in (await core.store.list_groups()).items()}
        for project in await core.store.list_projects():
            view = await analyzer._view(project, policies)
            graph.accounts_by_email.update((a.email, a) for a in view.accounts.values())
            project_readable = owner or await core.allowed_on_project(asker, PROJECT_POLICY_READ, project.project_id)
            for attached in view.bindings:
                if not _credential_permissions(attached.binding.role) and \
                        roles.PERM_IMPLICIT_DELEGATION not in roles.ROLES.get(attached.binding.role, ()):
                    continue
                if attached.account is None:
                    if project_readable:
                        graph.project_grants.setdefault(project.project_id, []).append(attached)
                    else:
                        graph.unexplored.add(f"projects/{project.project_id}")
                else:
                    graph.grants.setdefault(attached.account.unique_id, []).append(attached)
        if not owner:
            for account in graph.accounts_by_email.values():
                if account.unique_id in graph.grants and \
                        not await core.allowed_on_account(asker, ACCOUNT_POLICY_READ, account):
                    graph.hidden_accounts.add(account.unique_id)
                    graph.unexplored.add(account.email)
        return graph

    def _grants_on(self, account: ServiceAccount) -> list[AttachedBinding]:
        own = [] if account.unique_id in self.hidden_accounts else self.grants.get(account.unique_id, [])
        return [*own, *self.project_grants.get(account.project_id, [])]

    def paths_to(self, target: ServiceAccount, *, unconditional_only: bool) -> dict[str, list[dict[str, Any]]]:
        """Breadth first from the target: the shortest path of each principal that reaches it."""
        paths: dict[str, list[dict[str, Any]]] = {}
        reached: dict[str, list[dict[str, Any]]] = {target.unique_id: []}  # account -> its path to the target
        queue = deque([target])
        while queue:
            account = queue.popleft()
            onward = reached[account.unique_id]
            for attached in self._grants_on(account):
                binding = attached.binding
                if unconditional_only and binding.condition is not None:
                    continue
                held = _credential_permissions(binding.role)
                if account.unique_id == target.unique_id:
                    if not held:
                        continue  # implicitDelegation on the target itself obtains nothing
                elif not held:
                    held = (roles.PERM_IMPLICIT_DELEGATION,)
                for member in sorted(binding.members):
                    for principal, via in self._expanded(member):
                        if principal in paths:
                            continue
                        edge: dict[str, Any] = {"principal": principal, "serviceAccount": account.email,
                                                "role": binding.role, "permissions": list(held),
                                                "attachedResourceFullName": attached.attached}
                        if via:
                            edge["via"] = via
                        if binding.condition is not None:
                            edge["condition"] = binding.condition.to_json()
                        path = [edge, *onward]
                        paths[principal] = path
                        step = self.accounts_by_email.get(principal.removeprefix("serviceAccount:")) \
                            if principal.startswith("serviceAccount:") else None
                        if step is not None and step.unique_id not in reached:
                            reached[step.unique_id] = path
                            queue.append(step)
        paths.pop(f"serviceAccount:{target.email}", None)
        return paths

    def _expanded(self, member: str) -> list[tuple[str, str]]:
        """The member, and a group's members (with the group they come through)."""
        out = [(member, "")]
        if member in self.groups:
            out += [(m, member) for m in self.groups[member][:MAX_EXPANDED]]
        return out


def _credential_permissions(role: str) -> tuple[str, ...]:
    granted = roles.ROLES.get(role, frozenset())
    return tuple(p for p in CREDENTIAL_PERMISSIONS if p in granted)


# ---------------------------------------------------------------- the query

@dataclass(frozen=True, slots=True)
class _AnalysisQuery:
    identity: str | None
    resource: str | None
    permissions: tuple[str, ...]
    roles: tuple[str, ...]
    expand_groups: bool
    expand_roles: bool
    expand_resources: bool
    output_group_edges: bool
    access_time: float | None
    echo: dict[str, Any]

    @classmethod
    def parse(cls, query: Mapping[str, Any]) -> _AnalysisQuery:
        prefix = "analysisQuery."

        def one(name: str) -> str | None:
            values = query.get(prefix + name) or []
            if len(values) > 1:
                raise InvalidArgument(f"{prefix}{name} is given more than once.", field=prefix + name)
            return values[0] if values and values[0] != "" else None

        def many(name: str) -> tuple[str, ...]:
            return tuple(v for raw in query.get(prefix + name) or [] for v in raw.split(",") if v)

        def flag(name: str) -> bool:
            value = one("options." + name)
            if value not in (None, "true", "false"):
                raise InvalidArgument(f"Invalid {prefix}options.{name} '{value}': true or false.",
                                      field=f"{prefix}options.{name}")
            return value == "true"

        identity = one("identitySelector.identity")
        if identity is not None and (":" not in identity or any(c in identity for c in "*?")):
            raise InvalidArgument(f"Invalid {prefix}identitySelector.identity '{identity}': a principal as a binding "
                                  "names it (user:, serviceAccount:, group:, domain:, principal://…).",
                                  field=prefix + "identitySelector.identity")
        if identity is not None and not identity.startswith(("principal://", "principalSet://")):
            kind, _, rest = identity.partition(":")
            identity = f"{kind}:{rest.lower()}"
        access_time: float | None = None
        when = one("conditionContext.accessTime")
        if when is not None:
            try:
                access_time = parse_timestamp(when)
            except ValueError:
                raise InvalidArgument(f"Invalid {prefix}conditionContext.accessTime '{when}': an RFC 3339 time.",
                                      field=prefix + "conditionContext.accessTime") from None
        permissions, role_names = many("accessSelector.permissions"), many("accessSelector.roles")
        options = {name: flag(name) for name in ("expandGroups", "expandRoles", "expandResources",
                                                 "outputGroupEdges", "outputResourceEdges",
                                                 "analyzeServiceAccountImpersonation")}
        if options["expandGroups"] and identity is not None:
            raise InvalidArgument("options.expandGroups may not be set with an identitySelector.",
                                  field=prefix + "options.expandGroups")
        echo: dict[str, Any] = {}
        if identity is not None:
            echo["identitySelector"] = {"identity": identity}
        if one("resourceSelector.fullResourceName") is not None:
            echo["resourceSelector"] = {"fullResourceName": one("resourceSelector.fullResourceName")}
        if permissions or role_names:
            echo["accessSelector"] = {k: list(v) for k, v in (("permissions", permissions), ("roles", role_names))
                                      if v}
        if any(options.values()):
            echo["options"] = {k: True for k, v in options.items() if v}
        if when is not None:
            echo["conditionContext"] = {"accessTime": when}
        return cls(identity, one("resourceSelector.fullResourceName"), permissions, role_names,
                   options["expandGroups"], options["expandRoles"], options["expandResources"],
                   options["outputGroupEdges"], access_time, echo)

    def accesses(self, role: str) -> list[dict[str, str]]:
        """What of ``role`` the query asks about (none: the binding does not match)."""
        granted = roles.ROLES.get(role, frozenset())
        if self.permissions or self.roles:
            out = [{"role": role}] if role in self.roles else []
            out += [{"permission": p} for p in self.permissions if p in granted]
            return out
        if self.expand_roles:
            return [{"permission": p} for p in sorted(granted)]
        return [{"role": role}]

    def evaluate(self, binding: Binding, attached: AttachedBinding, project: Project) -> str | None:
        """A conditional binding's evaluation: TRUE or FALSE at the query's access time, CONDITIONAL without one."""
        compiled = binding.compiled_condition()
        if compiled is None:
            return None
        if self.access_time is None:
            return "CONDITIONAL"
        if attached.account is not None:
            ctx = RequestContext(self.access_time, account_condition_name(attached.account), SA_RESOURCE_TYPE)
        else:
            ctx = RequestContext(self.access_time, f"projects/{project.project_id}", PROJECT_RESOURCE_TYPE,
                                 CRM_SERVICE)
        return "TRUE" if compiled.evaluate(ctx) else "FALSE"


def _result(attached: AttachedBinding, binding: Binding, accesses: list[dict[str, str]], evaluation: str | None,
            q: _AnalysisQuery, view: ProjectView, identities: frozenset[str] | None,
            groups: Mapping[str, Sequence[str]], selected: set[str] | None) -> dict[str, Any]:
    if q.resource is not None and selected:
        resources = [q.resource]
    elif attached.account is None and q.expand_resources:
        resources = [attached.attached, *(account_asset(a) for a in list(view.accounts.values())[:MAX_EXPANDED])]
    else:
        resources = [attached.attached]
    acl: dict[str, Any] = {"resources": [{"fullResourceName": r} for r in resources], "accesses": accesses}
    if evaluation is not None:
        acl["conditionEvaluation"] = {"evaluationValue": evaluation}
    names: list[str] = []
    edges: list[dict[str, str]] = []
    if identities is not None:
        names = [q.identity] if q.identity is not None else []
        if q.output_group_edges:
            edges = [{"sourceNode": m, "targetNode": q.identity or ""} for m in sorted(binding.members)
                     if m.startswith("group:") and m in identities]
    else:
        for member in sorted(binding.members):
            names.append(member)
            if q.expand_groups and member.startswith("group:"):
                inside = list(groups.get(member[len("group:"):], ()))[:MAX_EXPANDED]
                names += [m for m in inside if m not in names]
                if q.output_group_edges:
                    edges += [{"sourceNode": member, "targetNode": m} for m in inside]
    identity_list: dict[str, Any] = {"identities": [{"name": n} for n in names]}
    if edges:
        identity_list["groupEdges"] = edges
    return {"attachedResourceFullName": attached.attached, "iamBinding": binding.to_json(),
            "accessControlLists": [acl], "identityList": identity_list, "fullyExplored": True}
