"""Service Usage v1 routes (``serviceusage.googleapis.com``): list, get, enable, batchEnable, disable, and
``operations.get``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.service import audit

SERVICE_USAGE = "serviceusage.googleapis.com"


async def list_services(request: Request) -> Response:
    """``GET /v1/projects/{p}/services?filter=&pageSize=&pageToken=``."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    params = request.query_params
    return JSONResponse(await kl.services.list_services(caller, request.path_params["project"],
                                                        params.get("filter", ""), params.get("pageSize"),
                                                        params.get("pageToken", "")))


async def batch_enable(request: Request) -> Response:
    """``POST /v1/projects/{p}/services:batchEnable {"serviceIds": [...]}``."""
    project = request.path_params["project"]
    audit.begin("google.api.serviceusage.v1.ServiceUsage.BatchEnableServices", SERVICE_USAGE,
                name=f"projects/{project}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("serviceIds",))
    audit.note_request(serviceIds=data.get("serviceIds"))
    return JSONResponse(await kl.services.batch_enable(caller, project, data))


async def get_service(request: Request) -> Response:
    """``GET /v1/projects/{p}/services/{service}``."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.services.get(caller, request.path_params["project"], request.path_params["service"]))


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
    return JSONResponse(await kl.services.enable(caller, project, name))


async def disable(request: Request) -> Response:
    """``POST /v1/projects/{p}/services/{service}:disable``."""
    project, name = _begin(request, "DisableService")
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.services.disable(caller, project, name, await read_json(request)))


async def operation(request: Request) -> Response:
    """``GET /v1/operations/{name}``: every operation is done when it is answered."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.services.operation(caller, f"operations/{request.path_params['operation']}"))
