"""The ASGI application: every surface on one port, routed by path."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from keyless.errors import KeylessError, MethodNotAllowed, NotFound
from keyless.http import admin, certs, oauth, openapi, orgpolicy, projects, service_accounts, signin, usage
from keyless.http.common import error_response
from keyless.http.credentials import CredentialVerbs
from keyless.http.edge import DirectRoute, Edge, internal_error
from keyless.http.guards import AccessLogMiddleware
from keyless.service.app import Keyless

ALL = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def _keyless_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeylessError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}."))
    if exc.status_code == 404:
        return error_response(NotFound(f"The requested URL {request.url.path} was not found on this server."))
    err = KeylessError(str(exc.detail))
    err.http_status = exc.status_code
    err.status = "INVALID_ARGUMENT" if exc.status_code < 500 else "INTERNAL"
    return error_response(err)


def routes() -> list[Route]:
    return [
        Route("/v1/projects/{project}/serviceAccounts", service_accounts.collection, methods=ALL),
        Route("/v1/projects/{project}/serviceAccounts/{rest:path}", service_accounts.member, methods=ALL),
        Route("/v1/projects", projects.collection, methods=ALL),
        Route("/v1/projects/{project}", projects.project, methods=ALL),
        Route("/v3/projects/{project}", projects.project, methods=ALL),
        Route("/v1/projects/{project}/services", usage.services, methods=ALL),
        Route("/v1/projects/{project}/services:batchEnable", usage.batch_enable, methods=ALL),
        Route("/v1/projects/{project}/services/{service}", usage.service, methods=ALL),
        Route("/v1/operations/{operation:path}", usage.operation, methods=ALL),
        Route("/v1/organizations/{organization}", orgpolicy.organization, methods=ALL),
        Route("/v2/projects/{project}/policies", orgpolicy.policies, methods=ALL),
        Route("/v2/projects/{project}/policies/{constraint}", orgpolicy.policies, methods=ALL),
        Route("/v2/projects/{project}/constraints", orgpolicy.constraints, methods=ALL),
        Route("/v2/organizations/{organization}/policies", orgpolicy.policies, methods=ALL),
        Route("/v2/organizations/{organization}/policies/{constraint}", orgpolicy.policies, methods=ALL),
        Route("/v2/organizations/{organization}/constraints", orgpolicy.constraints, methods=ALL),
        Route("/token", oauth.token, methods=ALL),
        Route("/oauth2/v4/token", oauth.token, methods=ALL),
        Route("/o/oauth2/token", oauth.token, methods=ALL),
        Route("/o/oauth2/auth", signin.authorize, methods=ALL),
        Route("/o/oauth2/v2/auth", signin.authorize, methods=ALL),
        Route("/tokeninfo", oauth.tokeninfo, methods=["GET", "POST"]),
        Route("/oauth2/v1/tokeninfo", oauth.tokeninfo, methods=["GET", "POST"]),
        Route("/oauth2/v3/tokeninfo", oauth.tokeninfo, methods=["GET", "POST"]),
        Route("/revoke", oauth.revoke, methods=["GET", "POST"]),
        Route("/o/oauth2/revoke", oauth.revoke, methods=["GET", "POST"]),
        Route("/oauth2/v1/certs", certs.oauth2_v1_certs, methods=["GET"]),
        Route("/oauth2/v3/certs", certs.oauth2_v3_certs, methods=["GET"]),
        Route("/service_accounts/v1/metadata/x509/{email}", certs.account_x509, methods=["GET"]),
        Route("/service_accounts/v1/metadata/jwk/{email}", certs.account_jwk, methods=["GET"]),
        Route("/service_accounts/v1/metadata/raw/{email}", certs.account_raw, methods=["GET"]),
        Route("/robot/v1/metadata/x509/{email}", certs.account_x509, methods=["GET"]),
        Route("/.well-known/openid-configuration", certs.openid_configuration, methods=["GET"]),
        Route("/keyless/v1/users", admin.users, methods=ALL),
        Route("/keyless/v1/users/{user}", admin.user, methods=ALL),
        Route("/keyless/v1/groups", admin.groups, methods=ALL),
        Route("/keyless/v1/groups/{group}", admin.group, methods=ALL),
        Route("/keyless/v1/projects", admin.projects, methods=ALL),
        Route("/keyless/v1/metadata", admin.metadata_attachment, methods=ALL),
        Route("/v1/auditLog", admin.audit_log, methods=ALL),
        Route("/keyless/v1/debug/clock:advance", admin.advance_clock, methods=ALL),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_document, methods=["GET"]),
    ]


async def _healthz(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


def build_app(keyless: Keyless, *, universe_domains: tuple[str, ...] = (), access_log: bool = False) -> ASGIApp:
    table = routes()
    app = Starlette(
        routes=table,
        exception_handlers={
            KeylessError: _keyless_error,
            HTTPException: _http_error,
            Exception: internal_error,
        },
    )
    app.state.keyless = keyless
    app.state.universe_domains = universe_domains
    by_path = {route.path: route for route in table}
    # Every credential (the IAM Credentials verbs, /token) skips Starlette's middleware and router.
    edge = Edge(app, keyless.audit, limits=keyless.limits, direct=(
        DirectRoute("/v1/projects/", by_path["/v1/projects/{project}/serviceAccounts/{rest:path}"]),
        DirectRoute("/token", by_path["/token"]),
    ), verbs=CredentialVerbs(keyless, universe_domains))
    return AccessLogMiddleware(edge) if access_log else edge
