"""Service Usage v1 routes (``serviceusage.googleapis.com``): list, get, enable, batchEnable, disable, and
``operations.get``.

Each handler reads the path, the query and the JSON body into the core's typed request
(``keyless.service.usage_requests``), checking their form only, calls ``keyless.service.usage.ServiceUsage`` and
renders the services' state and the done operations here."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.fields import check_fields
from keyless.domain.numbers import parse_count
from keyless.domain.services import check_service_name, title_of
from keyless.errors import InvalidArgument
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.service import audit
from keyless.service.usage_requests import (
    BatchEnableRequest,
    DisableServiceRequest,
    ListServicesRequest,
    ServiceOperation,
    ServiceRequest,
    ServiceState,
)

SERVICE_USAGE = "serviceusage.googleapis.com"
TYPES = "type.googleapis.com/google.api.serviceusage.v1."
DISABLE_FIELDS = ("disableDependentServices", "checkIfServiceHasUsage")
USAGE_CHECKS = ("CHECK_IF_SERVICE_HAS_USAGE_UNSPECIFIED", "SKIP", "CHECK")


def service_json(state: ServiceState) -> dict[str, Any]:
    number = state.project.number
    return {"name": f"projects/{number}/services/{state.service}", "parent": f"projects/{number}",
            "config": {"name": state.service, "title": title_of(state.service)},
            "state": "ENABLED" if state.enabled else "DISABLED"}


def operation_json(operation: ServiceOperation) -> dict[str, Any]:
    states = [service_json(s) for s in operation.services]
    if operation.verb == "batchEnable":
        response: dict[str, Any] = {"@type": TYPES + "BatchEnableServicesResponse", "services": states}
    else:
        kind = "EnableServiceResponse" if operation.verb == "enable" else "DisableServiceResponse"
        response = {"@type": TYPES + kind, "service": states[0]}
    number = operation.project.number
    return {"name": operation.name, "metadata": {"@type": TYPES + "OperationMetadata", "resourceNames": [
        f"services/{s.service}/projectSettings/{number}" for s in operation.services]}, "done": True,
        "response": response}


async def list_services(request: Request) -> Response:
    """``GET /v1/projects/{p}/services?filter=&pageSize=&pageToken=``."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    params = request.query_params
    page = await kl.services.list_services(caller, ListServicesRequest(
        request.path_params["project"], params.get("filter", ""),
        parse_count(params.get("pageSize"), field="pageSize", wire="pageSize"), params.get("pageToken", "")))
    body: dict[str, Any] = {"services": [service_json(s) for s in page.services]}
    if page.next_page_token:
        body["nextPageToken"] = page.next_page_token
    return JSONResponse(body)


async def batch_enable(request: Request) -> Response:
    """``POST /v1/projects/{p}/services:batchEnable {"serviceIds": [...]}``."""
    project = request.path_params["project"]
    audit.begin("google.api.serviceusage.v1.ServiceUsage.BatchEnableServices", SERVICE_USAGE,
                name=f"projects/{project}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("serviceIds",))
    ids = data.get("serviceIds")
    audit.note_request(serviceIds=ids)
    if not isinstance(ids, list):
        ids = []  # refused by the core as naming no service
    for name in ids:
        if not isinstance(name, str):
            check_service_name(name, field="serviceIds")  # refuses it, naming it
    operation = await kl.services.batch_enable(caller, BatchEnableRequest(project, tuple(ids)))
    return JSONResponse(operation_json(operation))


async def get_service(request: Request) -> Response:
    """``GET /v1/projects/{p}/services/{service}``."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    state = await kl.services.get(caller, ServiceRequest(request.path_params["project"],
                                                         request.path_params["service"]))
    return JSONResponse(service_json(state))


def _begin(request: Request, method: str) -> tuple[str, str]:
    project, name = request.path_params["project"], request.path_params["service"]
    audit.begin(f"google.api.serviceusage.v1.ServiceUsage.{method}", SERVICE_USAGE,
                name=f"projects/{project}/services/{name}")
    return project, name


async def enable(request: Request) -> Response:
    """``POST /v1/projects/{p}/services/{service}:enable``."""
    project, name = _begin(request, "EnableService")
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request, ())
    return JSONResponse(operation_json(await kl.services.enable(caller, ServiceRequest(project, name))))


async def disable(request: Request) -> Response:
    """``POST /v1/projects/{p}/services/{service}:disable``."""
    project, name = _begin(request, "DisableService")
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request)
    check_fields(data, DISABLE_FIELDS, "request")
    dependents = data.get("disableDependentServices", False)
    if not isinstance(dependents, bool):
        raise InvalidArgument("disableDependentServices must be a boolean.", field="disableDependentServices")
    usage_check = data.get("checkIfServiceHasUsage", USAGE_CHECKS[0])
    if usage_check not in USAGE_CHECKS:
        raise InvalidArgument(f"checkIfServiceHasUsage must be one of {', '.join(USAGE_CHECKS)}.",
                              field="checkIfServiceHasUsage")
    operation = await kl.services.disable(caller, DisableServiceRequest(project, name, dependents, usage_check))
    return JSONResponse(operation_json(operation))


async def operation(request: Request) -> Response:
    """``GET /v1/operations/{name}``: every operation is done when it is answered."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    found = await kl.services.operation(caller, f"operations/{request.path_params['operation']}")
    return JSONResponse(operation_json(found))
