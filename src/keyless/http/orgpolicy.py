"""Organization policies on the wire: Org Policy v2 (``orgpolicy.googleapis.com``: ``/v2/{parent}/policies``,
``/v2/{parent}/constraints``) and Resource Manager v1's org-policy verbs (``POST /v1/{parent}:getOrgPolicy`` ...),
for ``projects/{p}`` and ``organizations/{number}``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.http.routing import Endpoint
from keyless.service import audit
from keyless.service.core import Caller
from keyless.service.orgpolicies import OrgPolicies

ORG_POLICY = "orgpolicy.googleapis.com"
RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"
V1Verb = Callable[[OrgPolicies, Caller, str, Mapping[str, Any]], Awaitable[dict[str, Any]]]
V1_VERBS: dict[str, tuple[V1Verb, tuple[str, ...]]] = {
    "getOrgPolicy": (OrgPolicies.v1_get, ("constraint",)),
    "getEffectiveOrgPolicy": (OrgPolicies.v1_effective, ("constraint",)),
    "setOrgPolicy": (OrgPolicies.v1_set, ("policy", "updateMask")),
    "clearOrgPolicy": (OrgPolicies.v1_clear, ("constraint", "etag")),
    "listOrgPolicies": (OrgPolicies.v1_list, ("pageSize", "pageToken")),
    "listAvailableOrgPolicyConstraints": (OrgPolicies.v1_constraints, ("pageSize", "pageToken")),
}
V1_AUDITED = {"setOrgPolicy": "SetOrgPolicy", "clearOrgPolicy": "ClearOrgPolicy"}


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


async def list_policies(request: Request) -> Response:
    kl = keyless_of(request)
    return JSONResponse(await kl.org_policies.list_policies(await api_caller(request), _parent(request)))


async def create_policy(request: Request) -> Response:
    parent, _ = _begin(request, "CreatePolicy")
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.org_policies.create_policy(caller, parent, await read_json(request)))


async def get_policy(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.org_policies.get_policy(caller, _parent(request), request.path_params["constraint"]))


async def effective_policy(request: Request) -> Response:
    """``GET …/policies/{constraint}:getEffectivePolicy``."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.org_policies.effective_policy(caller, _parent(request),
                                                               request.path_params["constraint"]))


async def update_policy(request: Request) -> Response:
    """``PATCH`` (and ``PUT``) ``…/policies/{constraint}``."""
    parent, name = _begin(request, "UpdatePolicy")
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.org_policies.update_policy(caller, parent, name, await read_json(request)))


async def delete_policy(request: Request) -> Response:
    parent, name = _begin(request, "DeletePolicy")
    kl = keyless_of(request)
    caller = await api_caller(request)
    await kl.org_policies.delete_policy(caller, parent, name, request.query_params.get("etag"))
    return JSONResponse({})


async def constraints(request: Request) -> Response:
    """``GET /v2/{parent}/constraints``."""
    kl = keyless_of(request)
    return JSONResponse(await kl.org_policies.list_constraints(await api_caller(request), _parent(request)))


def v1_verb(verb: str) -> Endpoint:
    """The handler of Resource Manager v1's ``POST /v1/{parent}:{verb}`` for one org-policy verb."""
    method, fields = V1_VERBS[verb]
    audited = V1_AUDITED.get(verb)

    async def answer(request: Request) -> Response:
        parent = _parent(request)
        if audited is not None:
            audit.begin(audited, RESOURCE_MANAGER, name=parent)
            audit.note(resource=parent)
        kl = keyless_of(request)
        caller = await api_caller(request)
        return JSONResponse(await method(kl.org_policies, caller, parent, await read_json(request, fields)))

    answer.__name__ = answer.__qualname__ = verb
    return answer
