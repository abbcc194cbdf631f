"""Resource Manager v1/v3 project routes: list (v1), get, get/set/test IAM policy (the org-policy verbs of v1 are in
``keyless.http.orgpolicy``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.lifetimes import format_timestamp
from keyless.domain.policy import update_mask_fields
from keyless.errors import PermissionDenied
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.service import audit
from keyless.service.core import Caller
from keyless.service.owner_requests import ListProjectsRequest
from keyless.service.policies import permissions_of, policy_of, requested_version
from keyless.service.policy_requests import (
    GetProjectIamPolicyRequest,
    SetProjectIamPolicyRequest,
    TestProjectIamPermissionsRequest,
)


async def list_projects(request: Request) -> Response:
    """``GET /v1/projects``: ``projects.list`` (``gcloud projects list``, and ``gcloud init`` to offer projects)."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    query = request.query_params
    page = await kl.admin.list_projects(caller, ListProjectsRequest(query.get("filter"), query.get("pageSize"),
                                                                    query.get("pageToken")))
    out: dict[str, object] = {}
    if page.projects:
        out["projects"] = [{**_v1_project(p.project_id, p.number), "createTime": format_timestamp(p.created_at)}
                           for p in page.projects]
    if page.next_page_token:
        out["nextPageToken"] = page.next_page_token
    return JSONResponse(out)


def _v1_project(project_id: str, number: str) -> dict[str, object]:
    return {"projectNumber": number, "projectId": project_id, "lifecycleState": "ACTIVE", "name": project_id}


async def get_v1(request: Request) -> Response:
    caller = await api_caller(request)
    return JSONResponse(await _project_json(request, caller, request.path_params["project"], "v1"))


async def get_v3(request: Request) -> Response:
    caller = await api_caller(request)
    return JSONResponse(await _project_json(request, caller, request.path_params["project"], "v3"))


async def get_iam_policy(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("options",))
    policy = await kl.policies.get_for_project(caller, GetProjectIamPolicyRequest(
        request.path_params["project"], requested_version(request.query_params, data)))
    return JSONResponse(policy.to_json())


async def set_iam_policy(request: Request) -> Response:
    project_id = request.path_params["project"]
    audit.begin("SetIamPolicy", "cloudresourcemanager.googleapis.com", name=f"projects/{project_id}")
    audit.note(resource=f"projects/{project_id}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("policy", "updateMask"))
    audit.note_request(policy=data.get("policy"), updateMask=data.get("updateMask"))
    policy = await kl.policies.set_for_project(caller, SetProjectIamPolicyRequest(
        project_id, policy_of(data), update_mask_fields(data.get("updateMask"))))
    return JSONResponse(policy.to_json())


async def check_iam_permissions(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("permissions",))
    granted = await kl.policies.test_on_project(caller, TestProjectIamPermissionsRequest(
        request.path_params["project"], permissions_of(data)))
    return JSONResponse({"permissions": granted} if granted else {})


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
