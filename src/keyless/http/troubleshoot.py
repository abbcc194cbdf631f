"""Policy Troubleshooter on the wire: ``POST /v3/iam:troubleshoot`` (``gcloud policy-intelligence
troubleshoot-policy iam``) and ``POST /v2alpha1/iam:troubleshoot`` (``gcloud policy-troubleshoot iam``), Google's
host policytroubleshooter.googleapis.com; and keyless's chain explanation, ``POST /keyless/v1/iam:troubleshootChain``.

The explaining is the core's (``keyless.service.troubleshooter``, ``keyless.domain.troubleshoot``); this module
reads the access tuple and renders the explanation in each version's shape. keyless has no deny policies: v3's
``denyPolicyExplanation`` says that no deny policy applies (NOT_DENIED on every resource, none explained).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.troubleshoot import (
    AccessExplanation,
    BindingExplanation,
    Membership,
    PolicyExplanation,
)
from keyless.errors import InvalidArgument
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.service.troubleshooter import ChainExplanation, Troubleshooting, parse_condition_context

TUPLE_FIELDS = ("principal", "fullResourceName", "permission", "permissionFqdn", "conditionContext")


async def _troubleshoot(request: Request) -> Troubleshooting:
    caller = await api_caller(request)
    body = await read_json(request, ("accessTuple",))
    access = body.get("accessTuple")
    if not isinstance(access, dict):
        raise InvalidArgument("accessTuple is required.", field="accessTuple")
    unknown = sorted(set(access) - set(TUPLE_FIELDS))
    if unknown:
        raise InvalidArgument(f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'access_tuple'.",
                              field="accessTuple")
    return await keyless_of(request).troubleshooter.troubleshoot(
        caller, access.get("principal"), access.get("fullResourceName"), access.get("permission"),
        parse_condition_context(access.get("conditionContext")))


async def troubleshoot_v3(request: Request) -> Response:
    return JSONResponse(v3_response(await _troubleshoot(request)))


async def troubleshoot_v2alpha1(request: Request) -> Response:
    return JSONResponse(v2alpha1_response(await _troubleshoot(request)))


async def troubleshoot_chain(request: Request) -> Response:
    caller = await api_caller(request)
    body = await read_json(request, ("principal", "delegates", "serviceAccount", "method"))
    return JSONResponse(chain_response(await keyless_of(request).troubleshooter.explain_chain(caller, body)))


# ---------------------------------------------------------------- v3

_OVERALL = {"CAN_ACCESS": "CAN_ACCESS", "CANNOT_ACCESS": "CANNOT_ACCESS", "UNKNOWN_INFO": "UNKNOWN_INFO"}


def _relevance(value: str) -> str:
    return f"HEURISTIC_RELEVANCE_{value}"


def _v3_membership(m: Membership) -> dict[str, str]:
    return {"membership": f"MEMBERSHIP_{m.state}", "relevance": _relevance(m.relevance)}


def _condition_explanation(b: BindingExplanation) -> dict[str, Any] | None:
    if b.condition_result is None:
        return None
    if b.condition_result.value is None:
        return {"errors": [{"code": 3, "message": b.condition_result.error}]}
    return {"value": b.condition_result.value}


def _v3_binding(b: BindingExplanation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "allowAccessState": f"ALLOW_ACCESS_STATE_{b.state}",
        "role": b.role,
        "rolePermission": f"ROLE_PERMISSION_{b.role_permission}",
        "rolePermissionRelevance": _relevance(b.role_permission_relevance),
        "combinedMembership": _v3_membership(b.combined_membership),
        "memberships": {m.member: _v3_membership(m) for m in b.memberships},
        "relevance": _relevance(b.relevance),
    }
    if b.condition is not None:
        out["condition"] = b.condition.to_json()
        explained = _condition_explanation(b)
        if explained is not None:
            out["conditionExplanation"] = explained
    return out


def _v3_policy(p: PolicyExplanation) -> dict[str, Any]:
    out: dict[str, Any] = {"allowAccessState": f"ALLOW_ACCESS_STATE_{p.state}",
                           "fullResourceName": p.full_resource_name, "relevance": _relevance(p.relevance)}
    if p.policy is not None:
        out["policy"] = p.policy.to_json()
        if p.bindings:
            out["bindingExplanations"] = [_v3_binding(b) for b in p.bindings]
    return out


def allow_explanation(explanation: AccessExplanation) -> dict[str, Any]:
    state = {"CAN_ACCESS": "GRANTED", "CANNOT_ACCESS": "NOT_GRANTED"}.get(explanation.overall, "UNKNOWN_INFO")
    return {"allowAccessState": f"ALLOW_ACCESS_STATE_{state}",
            "explainedPolicies": [_v3_policy(p) for p in explanation.policies],
            "relevance": "HEURISTIC_RELEVANCE_HIGH"}


def deny_explanation(explanation: AccessExplanation) -> dict[str, Any]:
    """No deny policy applies in keyless: nothing is denied, on any resource of the hierarchy."""
    return {"denyAccessState": "DENY_ACCESS_STATE_NOT_DENIED",
            "explainedResources": [{"denyAccessState": "DENY_ACCESS_STATE_NOT_DENIED",
                                    "fullResourceName": p.full_resource_name,
                                    "relevance": "HEURISTIC_RELEVANCE_NORMAL"} for p in explanation.policies],
            "permissionDeniable": False,
            "relevance": "HEURISTIC_RELEVANCE_NORMAL"}


def v3_response(found: Troubleshooting) -> dict[str, Any]:
    return {
        "overallAccessState": _OVERALL[found.explanation.overall],
        "accessTuple": {"principal": found.principal, "fullResourceName": found.full_resource_name,
                        "permission": found.permission},
        "allowPolicyExplanation": allow_explanation(found.explanation),
        "denyPolicyExplanation": deny_explanation(found.explanation),
    }


# ---------------------------------------------------------------- v2alpha1 (the shape of v1: relevance HIGH/NORMAL)

_V2_MEMBERSHIP = {"MATCHED": "MEMBERSHIP_INCLUDED", "NOT_MATCHED": "MEMBERSHIP_NOT_INCLUDED",
                  "UNKNOWN_INFO": "MEMBERSHIP_UNKNOWN_INFO_DENIED"}
_V2_ROLE = {"INCLUDED": "ROLE_PERMISSION_INCLUDED", "NOT_INCLUDED": "ROLE_PERMISSION_NOT_INCLUDED",
            "UNKNOWN_INFO": "ROLE_PERMISSION_UNKNOWN_INFO_DENIED"}


def _v2_binding(b: BindingExplanation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "access": b.state,
        "role": b.role,
        "rolePermission": _V2_ROLE[b.role_permission],
        "rolePermissionRelevance": b.role_permission_relevance,
        "memberships": {m.member: {"membership": _V2_MEMBERSHIP[m.state], "relevance": m.relevance}
                        for m in b.memberships},
        "relevance": b.relevance,
    }
    if b.condition is not None:
        out["condition"] = b.condition.to_json()
        if b.condition_result is not None and b.condition_result.value is not None:
            out["conditionExplanation"] = {"value": b.condition_result.value}
    return out


def _v2_state(state: str) -> str:
    return "UNKNOWN_INFO_DENIED" if state == "UNKNOWN_INFO" else state


def v2alpha1_response(found: Troubleshooting) -> dict[str, Any]:
    explanation = found.explanation
    overall = {"CAN_ACCESS": "GRANTED", "CANNOT_ACCESS": "NOT_GRANTED"}.get(explanation.overall,
                                                                           "UNKNOWN_INFO_DENIED")
    policies = []
    for p in explanation.policies:
        out: dict[str, Any] = {"access": _v2_state(p.state), "fullResourceName": p.full_resource_name,
                               "relevance": p.relevance}
        if p.policy is not None:
            out["policy"] = p.policy.to_json()
            if p.bindings:
                out["bindingExplanations"] = [_v2_binding(b) for b in p.bindings]
        policies.append(out)
    return {"access": overall, "explainedPolicies": policies}


# ---------------------------------------------------------------- the chain

def chain_response(chain: ChainExplanation) -> dict[str, Any]:
    failing = chain.failing_hop
    hops = []
    for hop in chain.hops:
        out: dict[str, Any] = {"hop": hop.index, "principal": hop.grantee, "serviceAccount": hop.account,
                               "permission": hop.permission}
        if hop.found is None:
            out.update(overallAccessState="CANNOT_ACCESS", reason="ACCOUNT_NOT_FOUND", summary=hop.missing)
        else:
            out.update(overallAccessState=_OVERALL[hop.found.explanation.overall], summary=hop.found.summary,
                       allowPolicyExplanation=allow_explanation(hop.found.explanation))
        hops.append(out)
    result: dict[str, Any] = {"principal": chain.principal, "method": chain.method,
                              "overallAccessState": "CAN_ACCESS" if failing is None else "CANNOT_ACCESS",
                              "hops": hops}
    if failing is not None:
        result["failingHop"] = failing.index
    return result


# ---------------------------------------------------------------- Policy Analyzer

async def analyze_iam_policy(request: Request) -> Response:
    """``GET /v1/projects/{project}:analyzeIamPolicy?analysisQuery.…`` (Cloud Asset Inventory v1)."""
    caller = await api_caller(request)
    query: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        query.setdefault(name, []).append(value)
    return JSONResponse(await keyless_of(request).analyzer.analyze(caller, request.path_params["project"], query))


async def who_can_impersonate(request: Request) -> Response:
    """``GET /keyless/v1/serviceAccounts/{account}:whoCanImpersonate``: every principal that can obtain the
    account's credentials, with its path."""
    caller = await api_caller(request)
    return JSONResponse(await keyless_of(request).analyzer.who_can_impersonate(caller,
                                                                               request.path_params["account"]))


async def impersonation_graph(request: Request) -> Response:
    """``GET /keyless/v1/projects/{project}:impersonationGraph``: the direct grants through which anyone can obtain
    credentials of the project's accounts (and of the accounts on the chains into them), as nodes and edges."""
    caller = await api_caller(request)
    return JSONResponse(await keyless_of(request).analyzer.impersonation_graph(caller,
                                                                               request.path_params["project"]))
