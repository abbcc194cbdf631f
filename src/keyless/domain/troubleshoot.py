"""Why a principal holds a permission on a resource, or does not: every binding of every policy on the way,
explained as Google's Policy Troubleshooter explains it (which part of a binding held, and which mattered).

Pure: the caller hands the policies (the resource's and its ancestors', each with its full resource name, or
None for one the asker may not read), the principal's identities (itself, its groups, its domain, everyone) and
the condition context. ``keyless.http.troubleshoot`` renders the result in v3's and v2alpha1's wire shapes.

Relevance follows one rule: a part of a binding (its role holding the permission, its members including the
principal, its condition holding) is highly relevant when the binding's other parts hold, so that this part
alone decides whether the binding grants; a binding is highly relevant when it grants or when one part alone
stands in the way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from keyless.domain import roles
from keyless.domain.conditions import RequestContext
from keyless.domain.policy import Binding, Condition, Policy

# The states, named as v3 names them (v2alpha1's are derived when rendered).
GRANTED = "GRANTED"
NOT_GRANTED = "NOT_GRANTED"
UNKNOWN_INFO = "UNKNOWN_INFO"  # a policy the asker may not read
CAN_ACCESS = "CAN_ACCESS"
CANNOT_ACCESS = "CANNOT_ACCESS"
OVERALL_UNKNOWN_INFO = "UNKNOWN_INFO"

INCLUDED = "INCLUDED"
NOT_INCLUDED = "NOT_INCLUDED"
UNKNOWN_ROLE = "UNKNOWN_INFO"  # a role keyless does not define (left from an older catalogue)

MATCHED = "MATCHED"
NOT_MATCHED = "NOT_MATCHED"
MEMBERSHIP_UNKNOWN = "UNKNOWN_INFO"  # a principal set keyless cannot decide for this principal without a token

HIGH = "HIGH"
NORMAL = "NORMAL"


@dataclass(frozen=True, slots=True)
class Membership:
    member: str
    state: str  # MATCHED | NOT_MATCHED | UNKNOWN_INFO
    relevance: str


@dataclass(frozen=True, slots=True)
class ConditionResult:
    value: bool | None  # None: it could not be evaluated (which grants nothing)
    error: str = ""


@dataclass(frozen=True, slots=True)
class BindingExplanation:
    state: str  # GRANTED | NOT_GRANTED
    role: str
    role_permission: str  # INCLUDED | NOT_INCLUDED | UNKNOWN_INFO
    role_permission_relevance: str
    combined_membership: Membership  # its member: "" (the combined result)
    memberships: tuple[Membership, ...]
    relevance: str
    condition: Condition | None
    condition_result: ConditionResult | None


@dataclass(frozen=True, slots=True)
class PolicyExplanation:
    full_resource_name: str
    state: str  # GRANTED | NOT_GRANTED | UNKNOWN_INFO
    policy: Policy | None  # None: the asker may not read it
    bindings: tuple[BindingExplanation, ...]
    relevance: str


@dataclass(frozen=True, slots=True)
class AccessExplanation:
    """The whole answer: the overall state and each policy's explanation, the resource's first."""

    overall: str  # CAN_ACCESS | CANNOT_ACCESS | UNKNOWN_INFO
    policies: tuple[PolicyExplanation, ...]

    @property
    def granted(self) -> bool:
        return self.overall == CAN_ACCESS

    def granting_bindings(self) -> list[tuple[str, BindingExplanation]]:
        return [(p.full_resource_name, b) for p in self.policies for b in p.bindings if b.state == GRANTED]


def membership_state(member: str, identities: frozenset[str], undecidable: frozenset[str] = frozenset()) -> str:
    """Whether ``member`` (as a binding names it) includes the principal whose ``identities`` are given.
    ``undecidable``: prefixes of principal sets the principal may belong to, but which only its token would tell
    (a federated subject's groups and attributes)."""
    if member in identities:
        return MATCHED
    if any(member.startswith(prefix) for prefix in undecidable):
        return MEMBERSHIP_UNKNOWN
    return NOT_MATCHED


def _relevance(decides: bool) -> str:
    return HIGH if decides else NORMAL


def explain_binding(binding: Binding, identities: frozenset[str], permission: str, ctx: RequestContext,
                    undecidable: frozenset[str] = frozenset()) -> BindingExplanation:
    role_permissions = roles.ROLES.get(binding.role)
    role_state = UNKNOWN_ROLE if role_permissions is None else (
        INCLUDED if permission in role_permissions else NOT_INCLUDED)
    role_ok = role_state == INCLUDED
    states = {member: membership_state(member, identities, undecidable) for member in sorted(binding.members)}
    member_ok = MATCHED in states.values()
    combined_state = MATCHED if member_ok else (MEMBERSHIP_UNKNOWN if MEMBERSHIP_UNKNOWN in states.values()
                                                else NOT_MATCHED)
    result: ConditionResult | None = None
    condition_ok = True
    compiled = binding.compiled_condition()
    if compiled is not None:
        outcome = compiled.run(ctx)
        result = ConditionResult(None, outcome.error) if outcome.error else ConditionResult(outcome.granted)
        condition_ok = outcome.granted
    granted = role_ok and member_ok and condition_ok
    failures = (not role_ok) + (not member_ok) + (not condition_ok)
    memberships = tuple(Membership(member, state, _relevance(state == MATCHED and role_ok and condition_ok))
                        for member, state in states.items())
    return BindingExplanation(
        state=GRANTED if granted else NOT_GRANTED, role=binding.role, role_permission=role_state,
        role_permission_relevance=_relevance(member_ok and condition_ok),
        combined_membership=Membership("", combined_state, _relevance(role_ok and condition_ok)),
        memberships=memberships, relevance=_relevance(failures <= 1), condition=binding.condition,
        condition_result=result)


def explain_policy(full_resource_name: str, policy: Policy | None, identities: frozenset[str], permission: str,
                   ctx: RequestContext, undecidable: frozenset[str] = frozenset()) -> PolicyExplanation:
    if policy is None:
        return PolicyExplanation(full_resource_name, UNKNOWN_INFO, None, (), NORMAL)
    bindings = tuple(explain_binding(b, identities, permission, ctx, undecidable) for b in policy.bindings)
    granted = any(b.state == GRANTED for b in bindings)
    relevant = any(b.relevance == HIGH for b in bindings)
    return PolicyExplanation(full_resource_name, GRANTED if granted else NOT_GRANTED, policy, bindings,
                             _relevance(granted or relevant))


def troubleshoot(policies: Sequence[tuple[str, Policy | None]], identities: frozenset[str], permission: str,
                 ctx: RequestContext, undecidable: frozenset[str] = frozenset()) -> AccessExplanation:
    """Explain ``permission`` for ``identities`` over ``policies`` (the resource's first, then its ancestors'). The
    overall state is CAN_ACCESS when a readable policy grants; UNKNOWN_INFO when none does but one could not be
    read (it might); CANNOT_ACCESS otherwise."""
    explained = tuple(explain_policy(name, policy, identities, permission, ctx, undecidable)
                      for name, policy in policies)
    if any(p.state == GRANTED for p in explained):
        overall = CAN_ACCESS
    elif any(p.state == UNKNOWN_INFO for p in explained):
        overall = OVERALL_UNKNOWN_INFO
    else:
        overall = CANNOT_ACCESS
    return AccessExplanation(overall, explained)


def summary(explanation: AccessExplanation, member: str, permission: str, resource: str) -> str:
    """One line for a person: who holds the permission through what, or what stands in the way."""
    if explanation.granted:
        where, binding = explanation.granting_bindings()[0]
        via = [m.member for m in binding.memberships if m.state == MATCHED]
        through = f" through {via[0]}" if via and via[0] != member else ""
        cond = f" while condition '{binding.condition.title}' holds" if binding.condition else ""
        return f"{member} holds {permission} on {resource}: {binding.role} on {where}{through}{cond}"
    near = _near_misses(b for p in explanation.policies for b in p.bindings)
    if near:
        return f"{member} lacks {permission} on {resource}: {near[0]}"
    if explanation.overall == OVERALL_UNKNOWN_INFO:
        return f"{member} lacks {permission} on {resource} in the policies you may read"
    return f"{member} lacks {permission} on {resource}: no binding names it with a role that grants it"


def _near_misses(bindings: Iterable[BindingExplanation]) -> list[str]:
    out = []
    for b in bindings:
        if b.relevance != HIGH:
            continue
        if b.role_permission != INCLUDED:
            out.append(f"it holds {b.role}, which does not include the permission")
        elif b.combined_membership.state != MATCHED:
            out.append(f"{b.role} would grant it, but the binding does not name it (nor a group it is in)")
        elif b.condition is not None and b.condition_result is not None:
            how = (f"could not be evaluated ({b.condition_result.error})" if b.condition_result.value is None
                   else "evaluated false")
            out.append(f"the condition '{b.condition.title}' of its {b.role} binding {how}")
    return out
