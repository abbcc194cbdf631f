"""Resource Manager v1/v3 project routes: list (v1), get, get/set/test IAM policy, and (v1) the org-policy verbs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.lifetimes import format_timestamp
from keyless.errors import MethodNotAllowed, NotFound, PermissionDenied
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.http.orgpolicy import V1_VERBS, v1_verb
from keyless.service import audit
from keyless.service.core import Caller
from keyless.service.policies import requested_version


async def collection(request: Request) -> Response:
    """``GET /v1/projects``: ``projects.list`` (``gcloud projects list``, and ``gcloud init`` to offer projects)."""
    if request.method != "GET":
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    kl = keyless_of(request)
    caller = await api_caller(request)
    query = request.query_params
    projects, next_token = await kl.admin.list_projects(caller, query.get("filter"), query.get("pageSize"),
                                                        query.get("pageToken"))
    out: dict[str, object] = {}
    if projects:
        out["projects"] = [{**_v1_project(p.project_id, p.number), "createTime": format_timestamp(p.created_at)}
                           for p in projects]
    if next_token:
        out["nextPageToken"] = next_token
    return JSONResponse(out)


def _v1_project(project_id: str, number: str) -> dict[str, object]:
    return {"projectNumber": number, "projectId": project_id, "lifecycleState": "ACTIVE", "name": project_id}


async def project(request: Request) -> Response:
    version = request.url.path.split("/", 2)[1]  # "v1" or "v3"
    segment: str = request.path_params["project"]
    project_id, sep, verb = segment.partition(":")
    if version == "v1" and verb in V1_VERBS:
        return await v1_verb(request, f"projects/{project_id}", verb)
    if verb == "setIamPolicy":
        audit.begin("SetIamPolicy", "cloudresourcemanager.googleapis.com", name=f"projects/{project_id}")
        audit.note(resource=f"projects/{project_id}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    if not sep:
        if request.method != "GET":
            raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
        return JSONResponse(await _project_json(request, caller, project_id, version))
    if request.method != "POST":
        raise MethodNotAllowed(f"Method {request.method} is not allowed for :{verb}; use POST.")
    if verb == "getIamPolicy":
        data = await read_json(request, ("options",))
        policy = await kl.policies.get_for_project(caller, project_id, requested_version(request.query_params, data))
        return JSONResponse(policy.to_json())
    if verb == "setIamPolicy":
        data = await read_json(request, ("policy", "updateMask"))
        audit.note_request(policy=data.get("policy"), updateMask=data.get("updateMask"))
        return JSONResponse((await kl.policies.set_for_project(caller, project_id, data)).to_json())
    if verb == "testIamPermissions":
        data = await read_json(request, ("permissions",))
        granted = await kl.policies.test_on_project(caller, project_id, data)
        return JSONResponse({"permissions": granted} if granted else {})
    raise NotFound(f"Unknown method :{verb}.")


async def _project_json(request: Request, caller: Caller, project_id: str, version: str) -> dict[str, object]:
    kl = keyless_of(request)
    found = await kl.store.get_project(project_id)
    if found is None:
        raise PermissionDenied("The caller does not have permission")
    await kl.core.require_on_project(caller, "resourcemanager.projects.get", found.project_id)
    if version == "v3":
        return {"name": f"projects/{found.number}", "projectId": found.project_id, "state": "ACTIVE",
                "displayName": found.project_id}
    return _v1_project(found.project_id, found.number)
