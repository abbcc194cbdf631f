"""What the owner reads about a denial: the ``protoPayload.metadata.explanation`` of its audit entry.

A caller without permission gets Google's one 403 whatever the cause (``Core.missing_account``); the owner,
who reads the audit log, learns which cause it was: no such account (and the nearest email, for a typo), a
condition that evaluated false (by its title), or no binding at all (and the roles that would grant), and for
a delegation chain, the hop that failed.

The explanation is built on the way to a denial, never on the way to a grant, from what the denial found out
anyway (cached lookups): a denial of an account that is not there must cost about what the denial of one that
is there costs, or its time would tell the caller what its answer does not. So the search for the nearest
email or project, which reads and compares every account, is left to the owner's reading of the log
(``with_suggestion``): the entry stores only where to look (``findNearest``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keyless.domain.names import SA_DOMAIN, AccountRef, closest_email
from keyless.domain.policy import Explanation
from keyless.storage.base import ServiceAccount, Store

# The accounts (or projects) a typo is compared with, when the log is read: those of the project it names, or
# of every project when it names none that exists, up to this many.
MAX_CANDIDATES = 500
FIND_NEAREST = "findNearest"  # stored, consumed when the entry is read

HopIndex = tuple[int, int]  # (which hop of a delegation chain, 1-based; how many hops)

# Where the owner (or a holder of roles/iam.securityReviewer) asks for the whole explanation of a denial.
CHAIN_PATH = "/keyless/v1/iam:troubleshootChain"
TROUBLESHOOT_PATH = "/v3/iam:troubleshoot"
CREDENTIAL_METHODS = {"GenerateAccessToken": "generateAccessToken", "GenerateIdToken": "generateIdToken",
                      "SignBlob": "signBlob", "SignJwt": "signJwt"}


def refused(why: Explanation, member: str, shown: str, resource: str, hop: HopIndex | None = None
            ) -> dict[str, Any]:
    """The explanation of a permission ``member`` does not hold on ``resource`` (``shown``: as the owner knows
    it, an account's email or a project's name)."""
    out: dict[str, Any] = {"reason": why.reason, "summary": _on_hop(hop) + why.describe(member, shown),
                           "principal": member, "permission": why.permission, "resource": resource}
    details = why.to_json()
    for key in ("conditions", "grantingRoles"):
        if key in details:
            out[key] = details[key]
    return _with_hop(out, hop)


def chain_query(principal: str, account: str, delegates: Sequence[str], method: str) -> dict[str, Any]:
    """The request that explains a credentials call hop by hop."""
    body: dict[str, Any] = {"principal": principal, "serviceAccount": account, "method": method}
    if delegates:
        body["delegates"] = list(delegates)
    return {"method": "POST", "path": CHAIN_PATH, "body": body}


def with_troubleshooting(explanation: dict[str, Any], method_name: str, request: Mapping[str, Any],
                         caller: str = "") -> dict[str, Any]:
    """The explanation as read, with the request that explains the denial in full (``troubleshoot``): the
    chain explanation for a credentials call, the Policy Troubleshooter for any other permission. Added when the
    log is read (the entry stores only what the denial found). ``caller``: the entry's principal (a chain's
    explanation names the principal of its failing hop, a delegate after the first)."""
    principal = explanation.get("principal")
    if not isinstance(principal, str) or not principal:
        return explanation
    verb = CREDENTIAL_METHODS.get(method_name.rpartition(".")[2])
    name = request.get("name")
    if verb is not None and isinstance(name, str):
        delegates = [d for d in request.get("delegates") or () if isinstance(d, str)]
        query = chain_query(caller or principal, name, delegates, verb)
    elif explanation.get("reason") in ("NO_MATCHING_BINDING", "CONDITION_NOT_MET") and \
            isinstance(explanation.get("resource"), str):
        resource = str(explanation["resource"])
        host = "iam.googleapis.com" if "/serviceAccounts/" in resource else "cloudresourcemanager.googleapis.com"
        query = {"method": "POST", "path": TROUBLESHOOT_PATH, "body": {"accessTuple": {
            "principal": principal, "fullResourceName": f"//{host}/{resource}",
            "permission": explanation.get("permission")}}}
    else:
        return explanation
    return {**explanation, "troubleshoot": query}


async def missing_account(store: Store, member: str, ref: AccountRef, permission: str,
                          hop: HopIndex | None = None) -> dict[str, Any]:
    """The explanation of a request naming an account that is not there (or not in the project named)."""
    summary, nearest = await _what_is_missing(store, ref)
    out: dict[str, Any] = {"reason": "ACCOUNT_NOT_FOUND", "summary": _on_hop(hop) + summary, "principal": member,
                           "permission": permission, "resource": ref.name}
    if nearest is not None:
        out[FIND_NEAREST] = nearest
    return _with_hop(out, hop)


def missing_project(member: str, project: str, permission: str) -> dict[str, Any]:
    return {"reason": "PROJECT_NOT_FOUND", "summary": f"no project {project}", "principal": member,
            "permission": permission, "resource": f"projects/{project}", FIND_NEAREST: {"project": project}}


async def _what_is_missing(store: Store, ref: AccountRef) -> tuple[str, dict[str, str] | None]:
    """What is missing, from lookups the denial made already (cached), and where to look for what was meant."""
    if ref.is_unique_id:
        found = await store.get_service_account(ref.account)
        if found is None:
            return f"no account with unique id {ref.account}", None
        if found.deleted_at is not None:
            return f"account {ref.account} ({found.email}) was deleted", None
        return f"account {found.email} is in project {found.project_id}, not in {ref.project}", None
    active = await store.find_service_account(ref.account.lower())
    if active is not None:
        return f"account {active.email} is in project {active.project_id}, not in {ref.project}", None
    named = _project_of(ref.account) if ref.wildcard else ref.project
    project = await store.get_project(named) if named else None
    if project is not None:
        return f"no account {ref.account} in {project.project_id}", {"email": ref.account,
                                                                     "project": project.project_id}
    return (f"no account {ref.account}" + (f": there is no project {named}" if named else ""),
            {"email": ref.account, "project": ""})


def without_search(explanation: dict[str, Any]) -> dict[str, Any]:
    """The explanation as stored, without where to look for what was meant (as the ``--audit-log`` stream
    carries it: streaming happens before the response, where the search must not be)."""
    return {k: v for k, v in explanation.items() if k != FIND_NEAREST} if FIND_NEAREST in explanation \
        else explanation


async def with_suggestion(store: Store, explanation: dict[str, Any], seen: dict[Any, Any]) -> dict[str, Any]:
    """The explanation as the owner reads it: a missing account or project with the nearest existing one
    (``suggestion``, and "did you mean …?" in the summary), looked for now. ``seen`` carries what one reading
    of the log looked up already."""
    where = explanation.get(FIND_NEAREST)
    out = without_search(explanation)
    if not isinstance(where, dict):
        return out
    key: tuple[str, ...]
    if "email" in where:
        email = str(where["email"])
        key = ("email", email.lower(), str(where.get("project", "")))
        if key not in seen:
            candidates = await _emails(store, str(where.get("project", "")), seen)
            seen[key] = closest_email(email, [c for c in candidates if c != email.lower()])
    else:
        project = str(where.get("project", ""))
        key = ("project", project)
        if key not in seen:
            ids = [p.project_id for p in (await _projects(store, seen))[:MAX_CANDIDATES] if p.project_id != project]
            found = closest_email(f"{project}@p", [f"{i}@p" for i in ids])  # compares the part before the @
            seen[key] = found[:-2] if found else None
    suggestion = seen[key]
    if suggestion:
        out = {**out, "summary": f"{out['summary']}; did you mean {suggestion}?", "suggestion": suggestion}
    return out


async def _emails(store: Store, project_id: str, seen: dict[Any, Any]) -> list[str]:
    """The emails of ``project_id``'s accounts (of every project's, for ``""``), up to MAX_CANDIDATES."""
    key = ("emails", project_id)
    if key not in seen:
        accounts: list[ServiceAccount] = []
        for project in [project_id] if project_id else [p.project_id for p in await _projects(store, seen)]:
            if len(accounts) >= MAX_CANDIDATES:
                break
            accounts += await store.list_service_accounts(project, after_email="",
                                                          limit=MAX_CANDIDATES - len(accounts))
        seen[key] = [a.email for a in accounts]
    emails: list[str] = seen[key]
    return emails


async def _projects(store: Store, seen: dict[Any, Any]) -> list[Any]:
    if ("projects",) not in seen:
        seen[("projects",)] = await store.list_projects()
    projects: list[Any] = seen[("projects",)]
    return projects


def _project_of(email: str) -> str | None:
    """The project a service account's email names (``ID@PROJECT.iam.gserviceaccount.com``)."""
    domain = email.lower().rpartition("@")[2]
    return domain[:-len(SA_DOMAIN) - 1] if domain.endswith("." + SA_DOMAIN) else None


def _on_hop(hop: HopIndex | None) -> str:
    return f"delegation hop {hop[0]} of {hop[1]}: " if hop else ""


def _with_hop(out: dict[str, Any], hop: HopIndex | None) -> dict[str, Any]:
    if hop:
        out["hop"], out["hops"] = hop
    return out
