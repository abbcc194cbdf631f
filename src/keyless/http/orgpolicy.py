"""Organization policies on the wire: Org Policy v2 (``orgpolicy.googleapis.com``: ``/v2/{parent}/policies``,
``/v2/{parent}/constraints``) and Resource Manager v1's org-policy verbs (``POST /v1/{parent}:getOrgPolicy`` ...),
for ``projects/{p}`` and ``organizations/{number}``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import MethodNotAllowed, NotFound
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
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


async def policies(request: Request) -> Response:
    """``/v2/{parent}/policies`` (GET list, POST create) and ``…/policies/{constraint}`` (GET, PATCH, DELETE;
    ``GET …:getEffectivePolicy``)."""
    parent = _parent(request)
    name, sep, verb = request.path_params.get("constraint", "").partition(":")
    if sep and verb != "getEffectivePolicy":
        raise NotFound(f"Unknown method :{verb}.")
    if request.method not in ("GET", "HEAD"):
        action = "DeletePolicy" if request.method == "DELETE" else "CreatePolicy" if not name else "UpdatePolicy"
        audit.begin(f"google.cloud.orgpolicy.v2.OrgPolicy.{action}", ORG_POLICY)
        audit.note(resource=f"{parent}/policies/{name}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    org = kl.org_policies
    if not name:
        if request.method == "GET":
            return JSONResponse(await org.list_policies(caller, parent))
        if request.method == "POST":
            return JSONResponse(await org.create_policy(caller, parent, await read_json(request)))
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    if sep:
        if request.method != "GET":
            raise MethodNotAllowed(f"Method {request.method} is not allowed for :{verb}; use GET.")
        return JSONResponse(await org.effective_policy(caller, parent, name))
    if request.method == "GET":
        return JSONResponse(await org.get_policy(caller, parent, name))
    if request.method in ("PATCH", "PUT"):
        return JSONResponse(await org.update_policy(caller, parent, name, await read_json(request)))
    if request.method == "DELETE":
        await org.delete_policy(caller, parent, name, request.query_params.get("etag"))
        return JSONResponse({})
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")


async def constraints(request: Request) -> Response:
    """``GET /v2/{parent}/constraints``."""
    if request.method != "GET":
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    kl = keyless_of(request)
    return JSONResponse(await kl.org_policies.list_constraints(await api_caller(request), _parent(request)))


async def v1_verb(request: Request, parent: str, verb: str) -> Response:
    """Resource Manager v1's ``POST /v1/{parent}:{verb}`` for the org-policy verbs."""
    if request.method != "POST":
        raise MethodNotAllowed(f"Method {request.method} is not allowed for :{verb}; use POST.")
    if verb in V1_AUDITED:
        audit.begin(V1_AUDITED[verb], RESOURCE_MANAGER, name=parent)
        audit.note(resource=parent)
    kl = keyless_of(request)
    caller = await api_caller(request)
    method, fields = V1_VERBS[verb]
    return JSONResponse(await method(kl.org_policies, caller, parent, await read_json(request, fields)))


async def organization(request: Request) -> Response:
    """``/v1/organizations/{number}:{verb}``: the org-policy verbs on the installation's organization."""
    number, sep, verb = request.path_params["organization"].partition(":")
    if not sep or verb not in V1_VERBS:
        raise NotFound(f"The requested URL {request.url.path} was not found on this server.")
    return await v1_verb(request, f"organizations/{number}", verb)
