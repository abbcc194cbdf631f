"""Who can do what: Cloud Asset Inventory's ``analyzeIamPolicy`` over keyless's projects and accounts, and
keyless's transitive view, every principal that can obtain an account's credentials (directly, or through other
accounts: by holding their credentials in turn, or by naming them as delegates).

Both work from one index of the stored state: every stored policy that has bindings (``Store.policies_mentioning``),
each project's accounts and the bindings on it and them, the groups, and the bindings that give credentials with
their roles' permissions and their members' expansions worked out once. The index is built once per state
generation (kept in the store's decision memo, which every write empties) and shared by every query until the
next change; a policy whose etag did not change is not parsed again. Answers are then worked out in memory,
never with a query per principal.

What an asker is shown is what it may read, as in the troubleshooter: a project's policy needs
``resourcemanager.projects.getIamPolicy`` on it, an account's ``iam.serviceAccounts.getIamPolicy`` on the account
(the owner reads all). The analysis leaves out what it may not read and says so (``fullyExplored: false`` with a
PERMISSION_DENIED ``nonCriticalErrors`` entry; ``unexplored`` in the transitive view).
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keyless.domain import roles
from keyless.domain.conditions import RequestContext
from keyless.domain.lifetimes import parse_timestamp
from keyless.domain.names import PROJECT_ID_RE, parse_account_name
from keyless.domain.numbers import is_ascii_digits
from keyless.domain.policy import Binding, Condition, Policy, load_stored_policy
from keyless.errors import InvalidArgument, NotFound, PermissionDenied
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
ACCOUNT_LIST = "iam.serviceAccounts.list"  # who may see a project's accounts may see its impersonation graph
MAX_EXPANDED = 1000  # Google's default expansion per group or resource in the synchronous analyzeIamPolicy
REREAD_ONE_BY_ONE = 64  # changed policies read one by one up to this many; more: all of them in one query


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
    # The bindings the impersonation graph walks: the project's, and each account's (by unique id), if any.
    project_grants: list[_Grant] = field(default_factory=list)
    account_grants: dict[str, list[_Grant]] = field(default_factory=dict)


def project_asset(project: Project) -> str:
    return f"{CRM_PREFIX}projects/{project.number}"


def account_asset(account: ServiceAccount) -> str:
    return f"{IAM_PREFIX}projects/{account.project_id}/serviceAccounts/{account.unique_id}"


class Analyzer:
    def __init__(self, core: Core) -> None:
        self.core = core
        # The policies parsed last, by resource: one whose etag is unchanged is reused (every write gives a new
        # etag), so a change costs the parsing of the policies it touched, not of all of them.
        self._parsed: dict[str, Policy] = {}
        self._attached: dict[str, _Attached] = {}  # each policy's bindings as the last index held them

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
        """Every stored policy with a binding, by the resource it is stored under, in the store's order. The
        etags are read first: only policies not parsed yet at their etag are read out and parsed (all of them,
        in one query, the first time; one by one after a few writes)."""
        # A policy without bindings grants nothing: only those whose body names "bindings" matter.
        store = self.core.store
        parsed = self._parsed
        etags = await store.policy_etags_mentioning('"bindings"')
        missing = [resource for resource, etag in etags
                   if (known := parsed.get(resource)) is None or known.etag != etag]
        if len(missing) > REREAD_ONE_BY_ONE:
            fresh = {stored.resource: stored for stored in await store.policies_mentioning('"bindings"')}
        else:
            fresh = {}
            for resource in missing:
                stored = await store.get_policy(resource)
                if stored is not None:
                    fresh[resource] = stored
        out: dict[str, Policy] = {}
        for resource, etag in etags:
            policy = parsed.get(resource)
            if policy is None or policy.etag != etag:
                stored = fresh.get(resource)
                if stored is None:
                    continue  # deleted since the etags were read
                policy = load_stored_policy(stored.body, stored.etag)
            out[resource] = policy
        self._parsed = out  # what is no longer stored is forgotten
        return out

    async def _view(self, project: Project, policies: Mapping[str, Policy],
                    kept: dict[str, _Attached] | None = None) -> ProjectView:
        """The project's accounts and bindings. ``kept``: where the attached bindings of each policy are noted,
        to be reused while neither the policy nor its account changes."""
        kept = {} if kept is None else kept
        view = ProjectView(project, await self._accounts(project.project_id))
        resource = f"projects/{project.project_id}"
        own = policies.get(resource)
        if own is not None:
            attached = self._attach(resource, own, None, project_asset(project), kept)
            view.bindings += attached.bindings
            view.project_grants = attached.grants
        prefix = f"projects/{project.project_id}/serviceAccounts/"
        for resource, policy in policies.items():
            account = view.accounts.get(resource[len(prefix):]) if resource.startswith(prefix) else None
            if account is not None:
                attached = self._attach(resource, policy, account, account_asset(account), kept)
                view.bindings += attached.bindings
                if attached.grants:
                    view.account_grants[account.unique_id] = attached.grants
        return view

    def _attach(self, resource: str, policy: Policy, account: ServiceAccount | None, asset: str,
                kept: dict[str, _Attached]) -> _Attached:
        known = self._attached.get(resource)
        if known is None or known.policy is not policy or known.account != account:
            bindings = [AttachedBinding(asset, b, account) for b in policy.bindings]
            known = _Attached(policy, account, bindings, _grants(bindings))
        kept[resource] = known
        return known

    async def index(self) -> _Index:
        """The index of the current state: built once per state generation (the decision memo, emptied by every
        write), built afresh for every call outside a request."""
        memo = await self.core.store.memo()
        index: _Index | None = None if memo is None else memo.get(_INDEX_KEY)
        if index is None:
            store = self.core.store
            with _no_cycle_collection():
                policies = await self.policies()
                kept: dict[str, _Attached] = {}
                views = {project.project_id: await self._view(project, policies, kept)
                         for project in await store.list_projects()}
                self._attached = kept
                index = _Index(views, await store.list_groups())
            if memo is not None:
                memo[_INDEX_KEY] = index
        return index

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
        index = await self.index()
        view = index.views.get(project.project_id) or await self._view(project, await self.policies())
        selected = await self._selected(caller, q.resource, view)
        groups = index.groups
        identities: frozenset[str] | None = None
        if q.identity is not None:
            identities = frozenset({q.identity, "allUsers", "allAuthenticatedUsers",
                                    *(f"group:{g}" for g in await self.core.store.groups_of(q.identity))})
            if q.identity.startswith("user:"):
                identities |= {f"domain:{q.identity.rpartition('@')[2]}"}
        results: list[dict[str, Any]] = []
        hidden = 0
        readable: dict[str, bool] = {}
        accesses_of: dict[str, list[dict[str, str]]] = {}  # by role: worked out once per role, not per binding
        with _no_cycle_collection():
            for attached in view.bindings:
                binding = attached.binding
                if selected is not None and attached.attached not in selected:
                    continue
                accesses = accesses_of.get(binding.role)
                if accesses is None:
                    accesses = accesses_of[binding.role] = q.accesses(binding.role)
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
                results.append(_result(attached, binding, list(accesses), evaluation, q, view, identities, groups,
                                       selected))
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
        with _no_cycle_collection():
            found = graph.paths_to(target, unconditional_only=True)
            for principal, path in graph.paths_to(target, unconditional_only=False).items():
                found.setdefault(principal, path)
            principals = [{"principal": p, "conditional": any("condition" in e for e in path), "path": path}
                          for p, path in sorted(found.items(), key=lambda item: (len(item[1]), item[0]))]
        out: dict[str, Any] = {"serviceAccount": target.email, "principals": principals}
        if graph.unexplored:
            out["unexplored"] = sorted(graph.unexplored)
        return out

    # ------------------------------------------------------------ the impersonation graph of a project

    async def impersonation_graph(self, caller: Caller, name: str) -> dict[str, Any]:
        """``GET /keyless/v1/projects/{project}:impersonationGraph``: every direct grant through which someone can
        obtain credentials of an account of the project, directly or through chains, in one compact answer.

        The nodes are the project's accounts, then every principal, group, account (of any project) and project
        an edge names, each once. The edges are the bindings, one per member: who holds which role that gives
        credentials (or ``implicitDelegation``) on which account, or on which project (reaching each of its
        accounts), by index into ``nodes``, ``roles`` and ``conditions``. A group's members are ``memberships``
        edges, member to group. The grants on the accounts those principals are, and on their projects, are
        included in turn (the chains into the project), as far as they go. Only policies the caller may read are
        followed; the others are listed in ``unexplored``."""
        if not (PROJECT_ID_RE.match(name) or is_ascii_digits(name)):
            raise InvalidArgument(f"Invalid project '{name}': a project id or number.", field="project")
        project = await self.core.store.get_project(name)
        if project is None:
            raise NotFound(f"Project '{name}' not found or permission denied.")
        asker = await self.core.identities(caller.principal)
        owner = await self._is_owner(asker)
        if not owner:
            await self.core.require_on_project(caller, ACCOUNT_LIST, project.project_id)
        index = await self.index()
        view = index.views.get(project.project_id) or await self._view(project, await self.policies())
        builder = _GraphBuilder(index)
        walked_projects: set[str] = set()

        async def walk_project(project_id: str) -> None:
            """The grants on a project's policy (each reaches every account of it), once."""
            if project_id in walked_projects:
                return
            walked_projects.add(project_id)
            grants = index.project_grants.get(project_id)
            if not grants:
                return
            if not owner and not await self.core.allowed_on_project(asker, PROJECT_POLICY_READ, project_id):
                builder.unexplored.add(f"projects/{project_id}")
                return
            target = builder.node(f"projects/{project_id}", "project", project_id)
            for grant in grants:
                builder.grant(grant, target)

        with _no_cycle_collection():
            for account in view.accounts.values():
                builder.account(account)
            await walk_project(project.project_id)
            position = 0
            while position < len(builder.queue):  # every account reached: the project's, then the chains' relays
                account = builder.queue[position]
                position += 1
                grants = index.grants.get(account.unique_id)
                if grants and not owner and not await self.core.allowed_on_account(asker, ACCOUNT_POLICY_READ,
                                                                                   account):
                    builder.unexplored.add(account.email)
                    grants = None
                target = builder.account(account)
                for grant in grants or ():
                    builder.grant(grant, target)
                await walk_project(account.project_id)
            out = builder.answer(project.project_id)
        return out


_INDEX_KEY = ("analyzer", "index")
_DELEGATION = (roles.PERM_IMPLICIT_DELEGATION,)


@dataclass(frozen=True, slots=True)
class _Grant:
    """A binding the graph walks (its role gives credentials or ``implicitDelegation``), worked out once."""

    attached: AttachedBinding
    held: tuple[str, ...]  # the credential permissions of its role (none: implicitDelegation alone)
    members: tuple[str, ...]  # sorted


class _Index:
    """The stored state as the analyzer reads it, built once per state generation and shared by every query of
    it (nothing in it depends on who asks): each project's view, the groups, and the credential grants of every
    account (its own policy's) and of every project (its policy's, which reach each of its accounts)."""

    def __init__(self, views: dict[str, ProjectView], groups: dict[str, list[str]]) -> None:
        self.views = views  # by project id, in the order the store lists projects
        self.groups = groups
        # A group member's principals: the group's members, each with the group it comes through.
        self.group_expansions = {f"group:{g}": [(m, f"group:{g}") for m in members[:MAX_EXPANDED]]
                                 for g, members in groups.items()}
        self.accounts_by_email: dict[str, ServiceAccount] = {}
        self.grants: dict[str, list[_Grant]] = {}  # account unique id -> bindings on it granting credentials
        self.project_grants: dict[str, list[_Grant]] = {}
        for project_id, view in views.items():
            self.accounts_by_email.update((a.email, a) for a in view.accounts.values())
            if view.project_grants:
                self.project_grants[project_id] = view.project_grants
            self.grants.update(view.account_grants)


@dataclass(frozen=True, slots=True)
class _Attached:
    """A policy's bindings attached to its resource, and those the graph walks, kept while neither changes."""

    policy: Policy
    account: ServiceAccount | None
    bindings: list[AttachedBinding]
    grants: list[_Grant]


def _grants(bindings: Sequence[AttachedBinding]) -> list[_Grant]:
    """The bindings whose role gives credentials or ``implicitDelegation``, ready for the graph to walk."""
    out = []
    for attached in bindings:
        held = _walked(attached.binding.role)
        if held is not None:
            out.append(_Grant(attached, held, tuple(sorted(attached.binding.members))))
    return out


@functools.cache
def _walked(role: str) -> tuple[str, ...] | None:
    """The credential permissions of a role the graph walks (none: implicitDelegation alone); None: not walked."""
    credentials = _credential_permissions(role)
    return credentials if credentials or roles.PERM_IMPLICIT_DELEGATION in roles.ROLES.get(role, ()) else None


class _Graph:
    """The credential grants of every account (its own policy's and its project's) that the asker may read."""

    def __init__(self, index: _Index) -> None:
        self.index = index
        self.accounts_by_email = index.accounts_by_email
        self.readable_projects: set[str] = set()
        self.unexplored: set[str] = set()
        self.hidden_accounts: set[str] = set()

    @classmethod
    async def load(cls, analyzer: Analyzer, asker: frozenset[str], owner: bool) -> _Graph:
        core = analyzer.core
        index = await analyzer.index()
        graph = cls(index)
        for project_id in index.views:
            if owner or await core.allowed_on_project(asker, PROJECT_POLICY_READ, project_id):
                graph.readable_projects.add(project_id)
            elif project_id in index.project_grants:
                graph.unexplored.add(f"projects/{project_id}")
        if not owner:
            for account in graph.accounts_by_email.values():
                if account.unique_id in index.grants and \
                        not await core.allowed_on_account(asker, ACCOUNT_POLICY_READ, account):
                    graph.hidden_accounts.add(account.unique_id)
                    graph.unexplored.add(account.email)
        return graph

    def paths_to(self, target: ServiceAccount, *, unconditional_only: bool) -> dict[str, list[dict[str, Any]]]:
        """Breadth first from the target: the shortest path of each principal that reaches it."""
        index = self.index
        paths: dict[str, list[dict[str, Any]]] = {}
        reached: dict[str, list[dict[str, Any]]] = {target.unique_id: []}  # account -> its path to the target
        # A project's grants reach each of its accounts, but walking them once from an account other than the
        # target gives every principal they name a path: walking them again from another would add nothing.
        walked_projects: set[str] = set()
        group_expansions = index.group_expansions
        queue = deque([target])

        def reach(principal: str, via: str, account: ServiceAccount, onward: list[dict[str, Any]], grant: _Grant,
                  held: tuple[str, ...]) -> ServiceAccount | None:
            """The principal's path, through ``grant`` on ``account``; the account it is, if not reached yet."""
            binding = grant.attached.binding
            edge: dict[str, Any] = {"principal": principal, "serviceAccount": account.email, "role": binding.role,
                                    "permissions": list(held), "attachedResourceFullName": grant.attached.attached}
            if via:
                edge["via"] = via
            if binding.condition is not None:
                edge["condition"] = binding.condition.to_json()
            path = [edge, *onward]
            paths[principal] = path
            step = self.accounts_by_email.get(principal.removeprefix("serviceAccount:")) \
                if principal.startswith("serviceAccount:") else None
            if step is None or step.unique_id in reached:
                return None
            reached[step.unique_id] = path
            return step

        while queue:
            account = queue.popleft()
            onward = reached[account.unique_id]
            is_target = account.unique_id == target.unique_id
            grants = [] if account.unique_id in self.hidden_accounts else index.grants.get(account.unique_id, [])
            if account.project_id in self.readable_projects and account.project_id not in walked_projects:
                grants = [*grants, *index.project_grants.get(account.project_id, [])]
                if not is_target:
                    walked_projects.add(account.project_id)
            for grant in grants:
                if unconditional_only and grant.attached.binding.condition is not None:
                    continue
                held = grant.held
                if is_target:
                    if not held:
                        continue  # implicitDelegation on the target itself obtains nothing
                elif not held:
                    held = _DELEGATION
                # Each member in order, a group followed by its members: the first to name a principal is its path.
                for member in grant.members:
                    if member not in paths:
                        step = reach(member, "", account, onward, grant, held)
                        if step is not None:
                            queue.append(step)
                    inside = group_expansions.get(member)
                    if inside is not None:
                        for principal, via in inside:
                            if principal not in paths:
                                step = reach(principal, via, account, onward, grant, held)
                                if step is not None:
                                    queue.append(step)
        paths.pop(f"serviceAccount:{target.email}", None)
        return paths


class _GraphBuilder:
    """The impersonation graph's answer as it is built: each node, role and condition once, edges by index."""

    def __init__(self, index: _Index) -> None:
        self.index = index
        self.nodes: list[dict[str, str]] = []
        self.ids: dict[str, int] = {}
        self.roles: list[dict[str, Any]] = []
        self.role_ids: dict[str, int] = {}
        self.conditions: list[dict[str, Any]] = []
        self.condition_ids: dict[Condition, int] = {}
        self.edges: list[dict[str, int]] = []
        self.memberships: list[dict[str, int]] = []
        self.expanded: set[str] = set()  # the groups whose members are in ``memberships``
        self.queue: list[ServiceAccount] = []  # the accounts whose grants are walked, each once
        self.queued: set[str] = set()
        self.unexplored: set[str] = set()

    def node(self, node_id: str, kind: str, project: str | None = None) -> int:
        found = self.ids.get(node_id)
        if found is None:
            found = self.ids[node_id] = len(self.nodes)
            entry = {"id": node_id, "kind": kind}
            if project is not None:
                entry["project"] = project
            self.nodes.append(entry)
        return found

    def account(self, account: ServiceAccount) -> int:
        """The account's node; its grants are walked in turn."""
        if account.unique_id not in self.queued:
            self.queued.add(account.unique_id)
            self.queue.append(account)
        return self.node(f"serviceAccount:{account.email}", "serviceAccount", account.project_id)

    def member(self, member: str) -> int:
        """A binding's member's node: an account keyless holds is walked in turn, a group's members added."""
        found = self.ids.get(member)
        if found is not None:
            return found
        kind = member.partition(":")[0]
        if kind == "serviceAccount":
            account = self.index.accounts_by_email.get(member[len("serviceAccount:"):])
            if account is not None:
                return self.account(account)
        found = self.node(member, kind if kind in _MEMBER_KINDS else "other")
        inside = self.index.group_expansions.get(member)
        if inside is not None and member not in self.expanded:
            self.expanded.add(member)
            for principal, _ in inside:
                self.memberships.append({"source": self.member(principal), "target": found})
        return found

    def grant(self, grant: _Grant, target: int) -> None:
        binding = grant.attached.binding
        role = self.role_ids.get(binding.role)
        if role is None:
            role = self.role_ids[binding.role] = len(self.roles)
            self.roles.append({"name": binding.role, "permissions": list(grant.held or _DELEGATION)})
        condition: int | None = None
        if binding.condition is not None:
            condition = self.condition_ids.get(binding.condition)
            if condition is None:
                condition = self.condition_ids[binding.condition] = len(self.conditions)
                self.conditions.append(binding.condition.to_json())
        for member in grant.members:
            edge = {"source": self.member(member), "target": target, "role": role}
            if condition is not None:
                edge["condition"] = condition
            self.edges.append(edge)

    def answer(self, project_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"project": project_id, "nodes": self.nodes, "edges": self.edges,
                               "memberships": self.memberships, "roles": self.roles, "conditions": self.conditions,
                               "fullyExplored": not self.unexplored}
        if self.unexplored:
            out["unexplored"] = sorted(self.unexplored)
        return out


_MEMBER_KINDS = frozenset({"user", "serviceAccount", "group", "domain", "principal", "principalSet", "allUsers",
                           "allAuthenticatedUsers"})


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cycle collector paused while the index or an answer is built. Either allocates enough objects (the
    first index of 100,000 bindings some 500,000; the graph of 10,000 accounts some 100,000 dicts and lists) to
    set off full collections as it grows, each re-scanning the index for 0.2-0.4 s: nine of them during the
    first index, one about every other graph. Nothing is lost: the collector resumes at the end and finds
    whatever was allocated meanwhile as usual. (Other requests' tasks that run while the index is read from
    the store run without it for that moment.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
        if binding.condition is None:
            return None
        if self.access_time is None:
            return "CONDITIONAL"  # nothing to evaluate: the condition is not compiled
        compiled = binding.compiled_condition()
        assert compiled is not None
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
