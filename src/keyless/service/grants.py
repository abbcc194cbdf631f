"""Grants follow a principal, not its email.

When a service account (or a user) is deleted, every place that names it by email and grants it something is
rewritten to Google's ``deleted:KIND:EMAIL?uid=ID``: IAM policy bindings, group memberships, and for a
service account the ``allowedValues`` of org policies and the metadata server's attachment. A principal
created later with the same email inherits none of them; undeleting the account rewrites them back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from keyless.domain.policy import new_etag
from keyless.service.core import Core
from keyless.service.policies import store_policy
from keyless.storage.base import ServiceAccount

# The email of the account the metadata server serves (``keyless serve --attach``, PUT /keyless/v1/metadata).
ATTACHED_META = "metadata_attached_account"


def deleted_member(member: str, uid: str) -> str:
    """``deleted:serviceAccount:EMAIL?uid=UNIQUE_ID``: how a grant names a deleted principal."""
    return f"deleted:{member}?uid={uid}"


async def rewrite_member(core: Core, old: str, new: str) -> None:
    """Replace the member ``old`` by ``new`` in every policy binding and every group."""
    for stored in await core.store.policies_mentioning(old):
        policy = await core.load_policy(stored.resource)
        rewritten = policy.map_members(lambda m: new if m == old else m)
        if rewritten != policy:
            await store_policy(core, stored.resource, rewritten, expected_etag=None)
    for group in await core.store.groups_of(old):
        members = await core.store.get_group(group)
        if members is not None and old in members:
            await core.store.set_group(group, sorted({new if m == old else m for m in members}))


async def account_deleted(core: Core, account: ServiceAccount) -> None:
    member = f"serviceAccount:{account.email}"
    tombstone = deleted_member(member, account.unique_id)
    await rewrite_member(core, member, tombstone)
    # Org policies list an account by its email, bare (as Google documents) or as a member.
    await _rewrite_allowed_values(core, {account.email, member}, tombstone)
    await _rewrite_attachment(core, account.email, tombstone)


async def account_undeleted(core: Core, account: ServiceAccount) -> None:
    member = f"serviceAccount:{account.email}"
    tombstone = deleted_member(member, account.unique_id)
    await rewrite_member(core, tombstone, member)
    await _rewrite_allowed_values(core, {tombstone}, account.email)
    await _rewrite_attachment(core, tombstone, account.email)


async def _rewrite_attachment(core: Core, old: str, new: str) -> None:
    if await core.store.get_meta(ATTACHED_META) == old:
        await core.store.set_meta(ATTACHED_META, new)


async def _rewrite_allowed_values(core: Core, old: set[str], new: str) -> None:
    resources = ["organizations/-", *(f"projects/{p.project_id}" for p in await core.store.list_projects())]
    for resource in resources:
        for policy in await core.store.list_org_policies(resource):
            rules = [_rewrite_rule(rule, old, new) for rule in policy.spec.get("rules", ())]
            if rules != policy.spec.get("rules", []):
                await core.store.put_org_policy(replace(policy, spec={**policy.spec, "rules": rules},
                                                        etag=new_etag(), updated_at=core.now()))


def _rewrite_rule(rule: dict[str, Any], old: set[str], new: str) -> dict[str, Any]:
    values = rule.get("values")
    if not isinstance(values, dict) or not any(v in old for v in values.get("allowedValues", ())):
        return rule
    rewritten: list[str] = []
    for value in values["allowedValues"]:
        value = new if value in old else value
        if value not in rewritten:
            rewritten.append(value)
    return {**rule, "values": {**values, "allowedValues": rewritten}}
