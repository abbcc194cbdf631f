"""Workload identity federation on the wire: IAM v1's workload identity pools and providers
(``/v1/projects/{project}/locations/global/workloadIdentityPools/...``) and the Security Token Service's token
exchange (``POST /v1/token``, Google's ``https://sts.googleapis.com/v1/token``), whose errors have the OAuth shape."""

from __future__ import annotations

import ssl

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import KeylessError, Unavailable
from keyless.http.common import JSONResponse, api_caller, keyless_of, read_form, read_json
from keyless.http.oauth import NO_STORE
from keyless.http.routing import Route
from keyless.service import audit
from keyless.service.federation import EXCHANGE_METHOD, STS_SERVICE

IAM = "iam.googleapis.com"
POOLS = "/v1/projects/{project}/locations/global/workloadIdentityPools"
_API = "google.iam.v1.WorkloadIdentityPools."
STS_TOKEN_PATH = "/v1/token"
STS_INTROSPECT_PATH = "/v1/introspect"


def _show_deleted(request: Request) -> bool:
    return request.query_params.get("showDeleted", "").lower() == "true"


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["project"], request.path_params["pool"]


async def list_pools(request: Request) -> Response:
    """``GET …/workloadIdentityPools?showDeleted=&pageSize=&pageToken=``."""
    caller = await api_caller(request)
    params = request.query_params
    return JSONResponse(await keyless_of(request).federation.list_pools(
        caller, request.path_params["project"], show_deleted=_show_deleted(request),
        page_size=params.get("pageSize"), page_token=params.get("pageToken")))


async def create_pool(request: Request) -> Response:
    """``POST …/workloadIdentityPools?workloadIdentityPoolId=``."""
    project = request.path_params["project"]
    pool_id = request.query_params.get("workloadIdentityPoolId")
    audit.begin(_API + "CreateWorkloadIdentityPool", IAM, project=project, workloadIdentityPoolId=pool_id)
    caller = await api_caller(request)
    body = await read_json(request)
    return JSONResponse(await keyless_of(request).federation.create_pool(caller, project, pool_id, body))


async def get_pool(request: Request) -> Response:
    return JSONResponse(await keyless_of(request).federation.get_pool(await api_caller(request), *_ids(request)))


async def patch_pool(request: Request) -> Response:
    """``PATCH …/{pool}?updateMask=``."""
    mask = request.query_params.get("updateMask")
    audit.begin(_API + "UpdateWorkloadIdentityPool", IAM, updateMask=mask)
    caller = await api_caller(request)
    body = await read_json(request)
    return JSONResponse(await keyless_of(request).federation.patch_pool(caller, *_ids(request), body, mask))


async def delete_pool(request: Request) -> Response:
    audit.begin(_API + "DeleteWorkloadIdentityPool", IAM)
    return JSONResponse(await keyless_of(request).federation.delete_pool(await api_caller(request), *_ids(request)))


async def undelete_pool(request: Request) -> Response:
    audit.begin(_API + "UndeleteWorkloadIdentityPool", IAM)
    caller = await api_caller(request)
    await read_json(request, ())
    return JSONResponse(await keyless_of(request).federation.undelete_pool(caller, *_ids(request)))


def _provider_ids(request: Request) -> tuple[str, str, str]:
    return request.path_params["project"], request.path_params["pool"], request.path_params["provider"]


async def list_providers(request: Request) -> Response:
    """``GET …/{pool}/providers?showDeleted=&pageSize=&pageToken=``."""
    caller = await api_caller(request)
    params = request.query_params
    return JSONResponse(await keyless_of(request).federation.list_providers(
        caller, *_ids(request), show_deleted=_show_deleted(request), page_size=params.get("pageSize"),
        page_token=params.get("pageToken")))


async def create_provider(request: Request) -> Response:
    """``POST …/{pool}/providers?workloadIdentityPoolProviderId=``."""
    project, pool_id = _ids(request)
    provider_id = request.query_params.get("workloadIdentityPoolProviderId")
    audit.begin(_API + "CreateWorkloadIdentityPoolProvider", IAM, project=project,
                workloadIdentityPoolProviderId=provider_id)
    caller = await api_caller(request)
    body = await read_json(request)
    return JSONResponse(await keyless_of(request).federation.create_provider(caller, project, pool_id, provider_id,
                                                                             body))


async def get_provider(request: Request) -> Response:
    return JSONResponse(await keyless_of(request).federation.get_provider(await api_caller(request),
                                                                          *_provider_ids(request)))


async def patch_provider(request: Request) -> Response:
    """``PATCH …/providers/{provider}?updateMask=``."""
    mask = request.query_params.get("updateMask")
    audit.begin(_API + "UpdateWorkloadIdentityPoolProvider", IAM, updateMask=mask)
    caller = await api_caller(request)
    body = await read_json(request)
    return JSONResponse(await keyless_of(request).federation.patch_provider(caller, *_provider_ids(request), body,
                                                                            mask))


async def delete_provider(request: Request) -> Response:
    audit.begin(_API + "DeleteWorkloadIdentityPoolProvider", IAM)
    return JSONResponse(await keyless_of(request).federation.delete_provider(await api_caller(request),
                                                                             *_provider_ids(request)))


async def undelete_provider(request: Request) -> Response:
    audit.begin(_API + "UndeleteWorkloadIdentityPoolProvider", IAM)
    caller = await api_caller(request)
    await read_json(request, ())
    return JSONResponse(await keyless_of(request).federation.undelete_provider(caller, *_provider_ids(request)))


def client_certificate(request: Request) -> bytes | None:
    """The client certificate (DER) presented on this request's TLS connection, as the ASGI TLS extension carries
    it: set only by keyless's mTLS listener (``keyless.http.protocol``), from the handshake, never from a header."""
    chain = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or ()
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


async def sts_token(request: Request) -> Response:
    """``POST /v1/token``: the STS token exchange, its body a form or JSON (camelCase), as Google accepts; for the
    mTLS exchange, with the client certificate of the connection."""
    kl = keyless_of(request)
    client_address = request.client.host if request.client else ""
    kl.oauth.admit(client_address)  # the failed-grant budget of /token, before the request is read or audited
    audit.begin(EXCHANGE_METHOD, STS_SERVICE)
    try:
        granted = await kl.federation.exchange(await read_form(request), client_certificate=client_certificate(request))
    except Unavailable as exc:
        raise exc.oauth() from None
    except KeylessError as exc:
        kl.oauth.refused(client_address, exc)
        raise
    return JSONResponse(granted, headers=NO_STORE)


async def sts_introspect(request: Request) -> Response:
    """``POST /v1/introspect``: STS token introspection (RFC 7662), a form with ``token``."""
    try:
        info = await keyless_of(request).federation.introspect((await read_form(request)).get("token"))
    except Unavailable as exc:
        raise exc.oauth() from None
    return JSONResponse(info, headers=NO_STORE)


def routes() -> list[Route]:
    """This module's operations, for the application's route table."""
    pool = POOLS + "/{pool}"
    provider = pool + "/providers/{provider}"
    return [
        Route("GET", POOLS, list_pools),
        Route("POST", POOLS, create_pool),
        Route("GET", pool, get_pool),
        Route("PATCH", pool, patch_pool),
        Route("DELETE", pool, delete_pool),
        Route("POST", pool + ":undelete", undelete_pool),
        Route("GET", pool + "/providers", list_providers),
        Route("POST", pool + "/providers", create_provider),
        Route("GET", provider, get_provider),
        Route("PATCH", provider, patch_provider),
        Route("DELETE", provider, delete_provider),
        Route("POST", provider + ":undelete", undelete_provider),
        Route("POST", STS_TOKEN_PATH, sts_token),
        Route("POST", STS_INTROSPECT_PATH, sts_introspect),
    ]
