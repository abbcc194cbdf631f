"""Service Usage v1 routes (``serviceusage.googleapis.com``): list, get, enable, batchEnable, disable, and
``operations.get``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import MethodNotAllowed, NotFound
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_json
from keyless.service import audit

SERVICE_USAGE = "serviceusage.googleapis.com"
AUDITED = {"enable": "google.api.serviceusage.v1.ServiceUsage.EnableService",
           "disable": "google.api.serviceusage.v1.ServiceUsage.DisableService"}


async def services(request: Request) -> Response:
    """``GET /v1/projects/{p}/services?filter=&pageSize=&pageToken=``."""
    if request.method != "GET":
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    kl = keyless_of(request)
    caller = await api_caller(request)
    params = request.query_params
    return JSONResponse(await kl.services.list_services(caller, request.path_params["project"],
                                                        params.get("filter", ""), params.get("pageSize"),
                                                        params.get("pageToken", "")))


async def batch_enable(request: Request) -> Response:
    """``POST /v1/projects/{p}/services:batchEnable {"serviceIds": [...]}``."""
    project = request.path_params["project"]
    if request.method != "POST":
        raise MethodNotAllowed(f"Method {request.method} is not allowed for :batchEnable; use POST.")
    audit.begin("google.api.serviceusage.v1.ServiceUsage.BatchEnableServices", SERVICE_USAGE,
                name=f"projects/{project}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("serviceIds",))
    audit.note_request(serviceIds=data.get("serviceIds"))
    return JSONResponse(await kl.services.batch_enable(caller, project, data))


async def service(request: Request) -> Response:
    """``GET /v1/projects/{p}/services/{service}``; ``POST …:enable``, ``POST …:disable``."""
    project = request.path_params["project"]
    name, sep, verb = request.path_params["service"].partition(":")
    if sep and verb not in AUDITED:
        raise NotFound(f"Unknown method :{verb}.")
    if sep and request.method != "POST":
        raise MethodNotAllowed(f"Method {request.method} is not allowed for :{verb}; use POST.")
    if not sep and request.method != "GET":
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    if sep:
        audit.begin(AUDITED[verb], SERVICE_USAGE, name=f"projects/{project}/services/{name}")
    kl = keyless_of(request)
    caller = await api_caller(request)
    if verb == "enable":
        await read_json(request, ())
        return JSONResponse(await kl.services.enable(caller, project, name))
    if verb == "disable":
        return JSONResponse(await kl.services.disable(caller, project, name, await read_json(request)))
    return JSONResponse(await kl.services.get(caller, project, name))


async def operation(request: Request) -> Response:
    """``GET /v1/operations/{name}``: every operation is done when it is answered."""
    if request.method != "GET":
        raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
    kl = keyless_of(request)
    caller = await api_caller(request)
    return JSONResponse(await kl.services.operation(caller, f"operations/{request.path_params['operation']}"))
