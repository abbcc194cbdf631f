"""``google.cloud.resourcemanager.v3.Projects`` over gRPC: GetProject and the project's allow policy.

The messages are google-cloud-resource-manager's (``google.cloud.resourcemanager_v3.types``) and grpc-google-iam-v1's
``google.iam.v1`` policy messages. Each method does what REST's ``/v3/projects/{project}`` route does
(``keyless.http.projects``): the same core call and permission, and for ``SetIamPolicy`` the same audit entry
(``SetIamPolicy`` of ``cloudresourcemanager.googleapis.com``). The other methods (list, search, create, update,
move, delete, undelete) answer UNIMPLEMENTED: projects are made with ``keyless projects create``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.cloud.resourcemanager_v3 import types
from google.iam.v1 import iam_policy_pb2, policy_pb2

from keyless.domain.policy import update_mask_fields
from keyless.errors import InvalidArgument
from keyless.grpc.calls import Method, as_json, from_json, service_handler
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.core import Caller
from keyless.service.policies import permissions_of, policy_of, requested_version
from keyless.service.policy_requests import (
    GetProjectIamPolicyRequest,
    SetProjectIamPolicyRequest,
    TestProjectIamPermissionsRequest,
)
from keyless.service.shapes import project_v3_json

SERVICE = "google.cloud.resourcemanager.v3.Projects"
RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"  # the audited service, as REST's entries name it


def _project(name: str, field: str) -> str:
    """The project id or number of ``projects/{PROJECT}`` (REST's path segment)."""
    project = name.removeprefix("projects/")
    if not name.startswith("projects/") or not project or "/" in project:
        raise InvalidArgument(f"Invalid form of {field}: '{name}'. It must be projects/{{PROJECT}}.", field=field)
    return project


async def _get_project(kl: Keyless, caller: Caller, message: Any) -> bytes:
    project = await kl.admin.get_project(caller, _project(message.name, "name"))
    return from_json(types.Project.pb(), project_v3_json(project))


async def _get_policy(kl: Keyless, caller: Caller, message: Any) -> bytes:
    policy = await kl.policies.get_for_project(caller, GetProjectIamPolicyRequest(
        _project(message.resource, "resource"), requested_version({}, as_json(message))))
    return from_json(policy_pb2.Policy, policy.to_json())


def _set_policy_fields(message: Any) -> Mapping[str, Any]:
    """SetIamPolicy's entry as REST's route begins it: the name, and the project as the entry's resource."""
    project = message.resource.removeprefix("projects/")
    audit.note(resource=f"projects/{project}")
    return {"name": f"projects/{project}"}


async def _set_policy(kl: Keyless, caller: Caller, message: Any) -> bytes:
    data = as_json(message)
    audit.note_request(policy=data.get("policy"), updateMask=data.get("updateMask"))
    policy = await kl.policies.set_for_project(caller, SetProjectIamPolicyRequest(
        _project(message.resource, "resource"), policy_of(data), update_mask_fields(data.get("updateMask"))))
    return from_json(policy_pb2.Policy, policy.to_json())


async def _test_permissions(kl: Keyless, caller: Caller, message: Any) -> bytes:
    granted = await kl.policies.test_on_project(caller, TestProjectIamPermissionsRequest(
        _project(message.resource, "resource"), permissions_of(as_json(message))))
    return from_json(iam_policy_pb2.TestIamPermissionsResponse, {"permissions": granted})


METHODS: dict[str, Method] = {
    "GetProject": Method(types.GetProjectRequest.pb(), _get_project),
    "GetIamPolicy": Method(iam_policy_pb2.GetIamPolicyRequest, _get_policy),
    "SetIamPolicy": Method(iam_policy_pb2.SetIamPolicyRequest, _set_policy, "SetIamPolicy", _set_policy_fields),
    "TestIamPermissions": Method(iam_policy_pb2.TestIamPermissionsRequest, _test_permissions),
}

NOT_SERVED = ("ListProjects", "SearchProjects", "CreateProject", "UpdateProject", "MoveProject", "DeleteProject",
              "UndeleteProject")


def handlers(keyless: Keyless) -> Iterable[grpc.GenericRpcHandler]:
    """The generic handler of the service, every method over ``keyless``."""
    return [service_handler(keyless, SERVICE, RESOURCE_MANAGER, METHODS, NOT_SERVED)]
