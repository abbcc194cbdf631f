"""What the owner reads about a denial: the ``protoPayload.metadata.explanation`` of its audit entry.

A caller without permission gets Google's one 403 whatever the cause (``Core.missing_account``); the owner,
who reads the audit log, learns which cause it was: no such account (and the nearest email, for a typo), a
condition that evaluated false (by its title), or no binding at all (and the roles that would grant), and for
a delegation chain, the hop that failed. Built only on the way to a denial, never on the way to a grant.
"""

from __future__ import annotations

from typing import Any

from keyless.domain.names import SA_DOMAIN, AccountRef, closest_email
from keyless.domain.policy import Explanation
from keyless.storage.base import ServiceAccount, Store
from keyless.storage.cache import decision_memo

# The accounts a typo is compared with: those of the project it names, or of every project when it names none
# that exists, up to this many (a denial may cost a little more than a grant, not without bound: comparing
# with 200 accounts takes from 0.3 to 3 ms, the most when all their names are alike).
MAX_CANDIDATES = 200
MAX_REMEMBERED = 10_000

HopIndex = tuple[int, int]  # (which hop of a delegation chain, 1-based; how many hops)


def refused(why: Explanation, member: str, shown: str, resource: str, hop: HopIndex | None = None) -> dict[str, Any]:
    """The explanation of a permission ``member`` does not hold on ``resource`` (``shown``: as the owner knows
    it, an account's email or a project's name)."""
    out: dict[str, Any] = {"reason": why.reason, "summary": _on_hop(hop) + why.describe(member, shown),
                           "principal": member, "permission": why.permission, "resource": resource}
    details = why.to_json()
    for key in ("conditions", "grantingRoles"):
        if key in details:
            out[key] = details[key]
    return _with_hop(out, hop)


async def missing_account(store: Store, member: str, ref: AccountRef, permission: str,
                          hop: HopIndex | None = None) -> dict[str, Any]:
    """The explanation of a request naming an account that is not there (or not in the project named)."""
    summary, suggestion = await _what_is_missing(store, ref)
    out: dict[str, Any] = {"reason": "ACCOUNT_NOT_FOUND", "summary": _on_hop(hop) + summary, "principal": member,
                           "permission": permission, "resource": ref.name}
    if suggestion:
        out["suggestion"] = suggestion
    return _with_hop(out, hop)


async def missing_project(store: Store, member: str, project: str, permission: str) -> dict[str, Any]:
    ids = [p.project_id for p in (await store.list_projects())[:MAX_CANDIDATES]]
    suggestion = _closest_project(project, ids)
    out: dict[str, Any] = {"reason": "PROJECT_NOT_FOUND", "summary": f"no project {project}", "principal": member,
                           "permission": permission, "resource": f"projects/{project}"}
    if suggestion:
        out["summary"] += f"; did you mean {suggestion}?"
        out["suggestion"] = suggestion
    return out


async def _what_is_missing(store: Store, ref: AccountRef) -> tuple[str, str | None]:
    """What is missing, remembered until the stored state next changes: a client that retries with a typo asks
    the same question again and again."""
    memo = await decision_memo(store)
    key = ("missing account", ref.project, ref.account.lower())
    if memo is not None and key in memo:
        remembered: tuple[str, str | None] = memo[key]
        return remembered
    answer = await _find_what_is_missing(store, ref, memo)
    if memo is not None and len(memo) < MAX_REMEMBERED:
        memo[key] = answer
    return answer


async def _find_what_is_missing(store: Store, ref: AccountRef, memo: dict[Any, Any] | None
                                ) -> tuple[str, str | None]:
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
        summary = f"no account {ref.account} in {project.project_id}"
    else:
        summary = f"no account {ref.account}" + (f": there is no project {named}" if named else "")
    suggestion = closest_email(ref.account, await _candidates(store, project.project_id if project else None, memo))
    return (f"{summary}; did you mean {suggestion}?" if suggestion else summary), suggestion


async def _candidates(store: Store, project_id: str | None, memo: dict[Any, Any] | None) -> list[str]:
    """The emails a typo in ``project_id`` (None: in a project that does not exist) is compared with,
    remembered as ``_what_is_missing`` remembers its answers (each new typo then costs only the comparison)."""
    key = ("typo candidates", project_id or "")
    if memo is not None and key in memo:
        remembered: list[str] = memo[key]
        return remembered
    accounts: list[ServiceAccount] = []
    for project in [project_id] if project_id else [p.project_id for p in await store.list_projects()]:
        if len(accounts) >= MAX_CANDIDATES:
            break
        accounts += await store.list_service_accounts(project, after_email="", limit=MAX_CANDIDATES - len(accounts))
    emails = [a.email for a in accounts]
    if memo is not None and len(memo) < MAX_REMEMBERED:
        memo[key] = emails
    return emails


def _project_of(email: str) -> str | None:
    """The project a service account's email names (``ID@PROJECT.iam.gserviceaccount.com``)."""
    domain = email.lower().rpartition("@")[2]
    return domain[:-len(SA_DOMAIN) - 1] if domain.endswith("." + SA_DOMAIN) else None


def _closest_project(project: str, ids: list[str]) -> str | None:
    # closest_email compares the part before the @ (and a domain, here the same for all).
    found = closest_email(f"{project}@p", [f"{i}@p" for i in ids])
    return found[:-2] if found else None


def _on_hop(hop: HopIndex | None) -> str:
    return f"delegation hop {hop[0]} of {hop[1]}: " if hop else ""


def _with_hop(out: dict[str, Any], hop: HopIndex | None) -> dict[str, Any]:
    if hop:
        out["hop"], out["hops"] = hop
    return out
