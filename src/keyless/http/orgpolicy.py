"""Organization policies on the wire: Org Policy v2 (``orgpolicy.googleapis.com``: ``/v2/{parent}/policies``,
``/v2/{parent}/constraints``) and Resource Manager v1's org-policy verbs (``POST /v1/{parent}:getOrgPolicy`` ...),
for ``projects/{p}`` and ``organizations/{number}``.

Each handler reads the path and the JSON body into the core's typed request (``keyless.service.policy_requests``),
checking their form only (an object, text, base64 etags, no unknown field), calls ``keyless.service.orgpolicies``
and renders its result here: the v2 and v1 views of one stored policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.constraints import Constraint, default_rules, v1_view
from keyless.domain.fields import check_fields
from keyless.domain.lifetimes import format_timestamp
from keyless.domain.policy import EMPTY_ETAG
from keyless.errors import InvalidArgument
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.http.routing import Endpoint
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.core import Caller
from keyless.service.orgpolicies import given_etag
from keyless.service.policy_requests import (
    ConstraintList,
    EffectiveOrgPolicy,
    OrgPolicyList,
    OrgPolicyRequest,
    PlacedOrgPolicy,
    SetOrgPolicyV1Request,
    WriteOrgPolicyRequest,
)
from keyless.storage.base import OrgPolicy

ORG_POLICY = "orgpolicy.googleapis.com"
RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"
V2_POLICY_FIELDS = ("name", "spec", "dryRunSpec", "etag", "alternate")
V2_UNSUPPORTED = ("dryRunSpec", "alternate")


def _parent(request: Request) -> str:
    kind = "organizations" if "organization" in request.path_params else "projects"
    return f"{kind}/{request.path_params.get('organization') or request.path_params['project']}"


def _begin(request: Request, action: str) -> tuple[str, str]:
    """The parent and the constraint a changing request names, recorded as its audit entry's resource."""
    parent = _parent(request)
    name = request.path_params.get("constraint", "")
    audit.begin(f"google.cloud.orgpolicy.v2.OrgPolicy.{action}", ORG_POLICY)
    audit.note(resource=f"{parent}/policies/{name}")
    return parent, name


def _text(value: object) -> str:
    """A name field as sent; "" when it is not text (the core refuses it as missing)."""
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------- Org Policy v2


def _v2_json(placed: PlacedOrgPolicy) -> dict[str, Any]:
    policy = placed.policy
    assert policy is not None  # v2 answers only policies that exist
    spec: dict[str, Any] = {"etag": policy.etag, "updateTime": format_timestamp(policy.updated_at)}
    if policy.spec.get("rules"):
        spec["rules"] = policy.spec["rules"]
    for flag in ("inheritFromParent", "reset"):
        if policy.spec.get(flag):
            spec[flag] = True
    return {"name": f"{placed.where}/policies/{placed.constraint.short}", "spec": spec, "etag": policy.etag}


def _write_request(parent: str, constraint: str, body: Mapping[str, Any], *, etags: bool) -> WriteOrgPolicyRequest:
    """A v2 Policy body as CreatePolicy (``etags``: False, its etags are ignored) or UpdatePolicy reads it."""
    check_fields(body, V2_POLICY_FIELDS, "policy")
    name = body.get("name")
    raw_spec = body.get("spec")
    spec = raw_spec if isinstance(raw_spec, Mapping) else None
    return WriteOrgPolicyRequest(
        parent, constraint, None if name is None else _text(name), spec,
        etag=given_etag(body.get("etag"), "policy.etag") if etags else None,
        spec_etag=given_etag(spec.get("etag"), "policy.spec.etag") if etags and spec is not None else None,
        unsupported=tuple(f for f in V2_UNSUPPORTED if body.get(f) not in (None, {})))


async def list_policies(request: Request) -> Response:
    kl = keyless_of(request)
    found = await kl.org_policies.list_policies(await api_caller(request), _parent(request))
    return JSONResponse({"policies": [_v2_json(p) for p in found.policies]} if found.policies else {})


async def create_policy(request: Request) -> Response:
    parent, _ = _begin(request, "CreatePolicy")
    kl = keyless_of(request)
    caller = await api_caller(request)
    policy = _write_request(parent, "", await read_json(request), etags=False)
    return JSONResponse(_v2_json(await kl.org_policies.create_policy(caller, policy)))


async def get_policy(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    found = await kl.org_policies.get_policy(caller, OrgPolicyRequest(_parent(request),
                                                                      request.path_params["constraint"]))
    return JSONResponse(_v2_json(found))


async def effective_policy(request: Request) -> Response:
    """``GET …/policies/{constraint}:getEffectivePolicy``."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    found = await kl.org_policies.effective_policy(caller, OrgPolicyRequest(_parent(request),
                                                                            request.path_params["constraint"]))
    rules = found.spec["rules"] if found.spec is not None else default_rules(found.constraint)
    return JSONResponse({"name": f"{found.where}/policies/{found.constraint.short}", "spec": {"rules": rules}})


async def update_policy(request: Request) -> Response:
    """``PATCH`` (and ``PUT``) ``…/policies/{constraint}``."""
    parent, name = _begin(request, "UpdatePolicy")
    kl = keyless_of(request)
    caller = await api_caller(request)
    policy = _write_request(parent, name, await read_json(request), etags=True)
    return JSONResponse(_v2_json(await kl.org_policies.update_policy(caller, policy)))


async def delete_policy(request: Request) -> Response:
    parent, name = _begin(request, "DeletePolicy")
    kl = keyless_of(request)
    caller = await api_caller(request)
    await kl.org_policies.delete_policy(caller, OrgPolicyRequest(
        parent, name, given_etag(request.query_params.get("etag"), "etag")))
    return JSONResponse({})


async def constraints(request: Request) -> Response:
    """``GET /v2/{parent}/constraints``."""
    kl = keyless_of(request)
    found = await kl.org_policies.list_constraints(await api_caller(request), _parent(request))
    out = []
    for constraint in found.constraints:
        item: dict[str, Any] = {"name": f"{found.where}/constraints/{constraint.short}",
                                "displayName": constraint.display_name, "description": constraint.description,
                                "constraintDefault": constraint.default, "supportsDryRun": False}
        if constraint.kind == "boolean":
            item["booleanConstraint"] = {}
        else:
            item["listConstraint"] = {"supportsIn": False, "supportsUnder": False}
        out.append(item)
    return JSONResponse({"constraints": out})


# ---------------------------------------------------------------- Resource Manager v1


def _v1_json(constraint: Constraint, policy: OrgPolicy | None) -> dict[str, Any]:
    if policy is None:  # as Google answers a constraint with no policy: the etag to create one with
        return {"constraint": constraint.name, "etag": EMPTY_ETAG}
    return {"constraint": constraint.name, "etag": policy.etag, "updateTime": format_timestamp(policy.updated_at),
            **v1_view(constraint, policy.spec)}


def _v1_list_json(found: OrgPolicyList) -> dict[str, Any]:
    return {"policies": [_v1_json(p.constraint, p.policy) for p in found.policies]} if found.policies else {}


def _v1_effective_json(found: EffectiveOrgPolicy) -> dict[str, Any]:
    return {"constraint": found.constraint.name, **v1_view(found.constraint, found.spec)}


def _v1_constraints_json(found: ConstraintList) -> dict[str, Any]:
    out = []
    for constraint in found.constraints:
        item: dict[str, Any] = {"name": constraint.name, "displayName": constraint.display_name,
                                "description": constraint.description, "constraintDefault": constraint.default}
        if constraint.kind == "boolean":
            item["booleanConstraint"] = {}
        else:
            item["listConstraint"] = {}
        out.append(item)
    return {"constraints": out}


async def _v1_get(kl: Keyless, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
    found = await kl.org_policies.v1_get(caller, OrgPolicyRequest(parent, _text(body.get("constraint"))))
    return _v1_json(found.constraint, found.policy)


async def _v1_effective(kl: Keyless, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return _v1_effective_json(await kl.org_policies.v1_effective(
        caller, OrgPolicyRequest(parent, _text(body.get("constraint")))))


async def _v1_set(kl: Keyless, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
    policy = body.get("policy")
    if not isinstance(policy, Mapping):
        raise InvalidArgument("policy is required.", field="policy")
    found = await kl.org_policies.v1_set(caller, SetOrgPolicyV1Request(
        parent, _text(policy.get("constraint")), policy, given_etag(policy.get("etag"), "policy.etag")))
    return _v1_json(found.constraint, found.policy)


async def _v1_clear(kl: Keyless, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
    await kl.org_policies.v1_clear(caller, OrgPolicyRequest(parent, _text(body.get("constraint")),
                                                            given_etag(body.get("etag"), "etag")))
    return {}


async def _v1_list(kl: Keyless, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return _v1_list_json(await kl.org_policies.v1_list(caller, parent))


async def _v1_constraints(kl: Keyless, caller: Caller, parent: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return _v1_constraints_json(await kl.org_policies.v1_constraints(caller, parent))


V1Verb = Callable[[Keyless, Caller, str, Mapping[str, Any]], Awaitable[dict[str, Any]]]
# Each verb: its answer and the fields its body may have (pageSize and pageToken are accepted: one page has all).
V1_VERBS: dict[str, tuple[V1Verb, tuple[str, ...]]] = {
    "getOrgPolicy": (_v1_get, ("constraint",)),
    "getEffectiveOrgPolicy": (_v1_effective, ("constraint",)),
    "setOrgPolicy": (_v1_set, ("policy", "updateMask")),
    "clearOrgPolicy": (_v1_clear, ("constraint", "etag")),
    "listOrgPolicies": (_v1_list, ("pageSize", "pageToken")),
    "listAvailableOrgPolicyConstraints": (_v1_constraints, ("pageSize", "pageToken")),
}
V1_AUDITED = {"setOrgPolicy": "SetOrgPolicy", "clearOrgPolicy": "ClearOrgPolicy"}


def v1_verb(verb: str) -> Endpoint:
    """The handler of Resource Manager v1's ``POST /v1/{parent}:{verb}`` for one org-policy verb."""
    answer_of, fields = V1_VERBS[verb]
    audited = V1_AUDITED.get(verb)

    async def answer(request: Request) -> Response:
        parent = _parent(request)
        if audited is not None:
            audit.begin(audited, RESOURCE_MANAGER, name=parent)
            audit.note(resource=parent)
        kl = keyless_of(request)
        caller = await api_caller(request)
        return JSONResponse(await answer_of(kl, caller, parent, await read_json(request, fields)))

    answer.__name__ = answer.__qualname__ = verb
    return answer
