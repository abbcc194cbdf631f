"""The ASGI application of the API port: every surface on one port, dispatched by one route table.

Each entry of :func:`routes` is one method, one path template (with its ``:verb``), the handler of that one
operation and the Google API it belongs to (for ``--enforce-services``); ``keyless.http.routing`` matches it, the
edge calls the handler. A path no template matches is a 404, a method none of the path's templates takes a 405 with
``Allow``, both in the path's error shape (OAuth's on the OAuth endpoints, Google's elsewhere).
``keyless.http.openapi`` documents exactly these operations (tests/http/test_routing.py holds them to it).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from keyless.domain.services import IAM, ORG_POLICY, RESOURCE_MANAGER
from keyless.errors import KeylessError, MethodNotAllowed, NotFound, OAuthError
from keyless.http import (
    admin,
    certs,
    console,
    federation,
    oauth,
    openapi,
    orgpolicy,
    projects,
    service_accounts,
    signin,
    troubleshoot,
    usage,
)
from keyless.http.common import JSONResponse
from keyless.http.credentials import CredentialVerbs
from keyless.http.edge import Edge, Host
from keyless.http.guards import AccessLogMiddleware
from keyless.http.routing import CredentialVerb, Route, Router
from keyless.service.app import Keyless


async def _healthz(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


def _service_account_routes() -> list[Route]:
    sa = service_accounts
    base = "/v1/projects/{project}/serviceAccounts"
    account = base + "/{account}"
    key = account + "/keys/{key}"
    return [
        Route("GET", base, sa.list_accounts, IAM),
        Route("POST", base, sa.create_account, IAM),
        Route("GET", account, sa.get_account, IAM),
        Route("PATCH", account, sa.patch_account, IAM),
        Route("PUT", account, sa.update_account, IAM),
        Route("DELETE", account, sa.delete_account, IAM),
        Route("POST", account + ":disable", sa.disable_account, IAM),
        Route("POST", account + ":enable", sa.enable_account, IAM),
        Route("POST", account + ":undelete", sa.undelete_account, IAM),
        Route("POST", account + ":getIamPolicy", sa.get_iam_policy, IAM),
        Route("POST", account + ":setIamPolicy", sa.set_iam_policy, IAM),
        Route("POST", account + ":testIamPermissions", sa.check_iam_permissions, IAM),
        Route("GET", account + "/allowedLocations", sa.allowed_locations, IAM),
        Route("GET", account + "/keys", sa.list_keys, IAM),
        Route("POST", account + "/keys", sa.create_key, IAM),
        Route("POST", account + "/keys:upload", sa.upload_key, IAM),
        Route("GET", key, sa.get_key, IAM),
        Route("DELETE", key, sa.delete_key, IAM),
        Route("POST", key + ":disable", sa.disable_key, IAM),
        Route("POST", key + ":enable", sa.enable_key, IAM),
        # The IAM Credentials verbs (and IAM v1's signBlob/signJwt): the edge's raw-ASGI fast path.
        *(Route("POST", f"{account}:{verb}", CredentialVerb(verb), IAM)
          for verb in ("generateAccessToken", "generateIdToken", "signBlob", "signJwt")),
    ]


def _project_routes() -> list[Route]:
    out = [
        Route("GET", "/v1/projects", projects.list_projects),
        Route("GET", "/v1/projects/{project}", projects.get_v1, RESOURCE_MANAGER),
        Route("GET", "/v3/projects/{project}", projects.get_v3, RESOURCE_MANAGER),
    ]
    for version in ("v1", "v3"):
        project = f"/{version}/projects/{{project}}"
        out += [
            Route("POST", project + ":getIamPolicy", projects.get_iam_policy, RESOURCE_MANAGER),
            Route("POST", project + ":setIamPolicy", projects.set_iam_policy, RESOURCE_MANAGER),
            Route("POST", project + ":testIamPermissions", projects.check_iam_permissions, RESOURCE_MANAGER),
        ]
    return out


def _org_policy_routes() -> list[Route]:
    out: list[Route] = []
    for parent in ("/v2/projects/{project}", "/v2/organizations/{organization}"):
        policy = parent + "/policies/{constraint}"
        out += [
            Route("GET", parent + "/policies", orgpolicy.list_policies, ORG_POLICY),
            Route("POST", parent + "/policies", orgpolicy.create_policy, ORG_POLICY),
            Route("GET", policy, orgpolicy.get_policy, ORG_POLICY),
            Route("PATCH", policy, orgpolicy.update_policy, ORG_POLICY),
            Route("PUT", policy, orgpolicy.update_policy, ORG_POLICY),
            Route("DELETE", policy, orgpolicy.delete_policy, ORG_POLICY),
            Route("GET", policy + ":getEffectivePolicy", orgpolicy.effective_policy, ORG_POLICY),
            Route("GET", parent + "/constraints", orgpolicy.constraints, ORG_POLICY),
        ]
    # Resource Manager v1's org-policy verbs.
    for verb in orgpolicy.V1_VERBS:
        handler = orgpolicy.v1_verb(verb)
        out += [Route("POST", f"/v1/projects/{{project}}:{verb}", handler, RESOURCE_MANAGER),
                Route("POST", f"/v1/organizations/{{organization}}:{verb}", handler, RESOURCE_MANAGER)]
    return out


def _service_usage_routes() -> list[Route]:
    services = "/v1/projects/{project}/services"
    return [
        Route("GET", services, usage.list_services),
        Route("POST", services + ":batchEnable", usage.batch_enable),
        Route("GET", services + "/{service}", usage.get_service),
        Route("POST", services + "/{service}:enable", usage.enable),
        Route("POST", services + "/{service}:disable", usage.disable),
        Route("GET", "/v1/operations/{operation}", usage.operation),
    ]


def _oauth_routes() -> list[Route]:
    out = [Route("POST", path, oauth.token) for path in ("/token", "/oauth2/v4/token", "/o/oauth2/token")]
    for path in ("/tokeninfo", "/oauth2/v1/tokeninfo", "/oauth2/v3/tokeninfo"):
        out += [Route("GET", path, oauth.tokeninfo), Route("POST", path, oauth.tokeninfo_form)]
    for path in ("/revoke", "/o/oauth2/revoke"):
        out += [Route("GET", path, oauth.revoke), Route("POST", path, oauth.revoke_form)]
    for path in ("/o/oauth2/auth", "/o/oauth2/v2/auth"):
        out += [Route("GET", path, signin.authorize), Route("POST", path, signin.sign_in)]
    return out


def _public_key_routes() -> list[Route]:
    return [
        Route("GET", "/oauth2/v1/certs", certs.oauth2_v1_certs),
        Route("GET", "/oauth2/v3/certs", certs.oauth2_v3_certs),
        Route("GET", "/service_accounts/v1/metadata/x509/{email}", certs.account_x509),
        Route("GET", "/service_accounts/v1/metadata/jwk/{email}", certs.account_jwk),
        Route("GET", "/service_accounts/v1/metadata/raw/{email}", certs.account_raw),
        Route("GET", "/robot/v1/metadata/x509/{email}", certs.account_x509),
        Route("GET", "/.well-known/openid-configuration", certs.openid_configuration),
    ]


def _troubleshooting_routes() -> list[Route]:
    return [
        Route("POST", "/v3/iam:troubleshoot", troubleshoot.troubleshoot_v3),
        Route("POST", "/v2alpha1/iam:troubleshoot", troubleshoot.troubleshoot_v2alpha1),
        Route("POST", "/keyless/v1/iam:troubleshootChain", troubleshoot.troubleshoot_chain),
        # Cloud Asset's method, checked as Resource Manager's (the project verbs' API) as it always was.
        Route("GET", "/v1/projects/{project}:analyzeIamPolicy", troubleshoot.analyze_iam_policy, RESOURCE_MANAGER),
        Route("GET", "/keyless/v1/serviceAccounts/{account}:whoCanImpersonate", troubleshoot.who_can_impersonate),
        Route("GET", "/keyless/v1/projects/{project}:impersonationGraph", troubleshoot.impersonation_graph),
    ]


def _admin_routes() -> list[Route]:
    user = "/keyless/v1/users/{user}"
    group = "/keyless/v1/groups/{group}"
    return [
        Route("GET", "/keyless/v1/users", admin.list_users),
        Route("POST", "/keyless/v1/users", admin.create_user),
        Route("GET", user, admin.get_user),
        Route("DELETE", user, admin.delete_user),
        Route("POST", user + ":disable", admin.disable_user),
        Route("POST", user + ":enable", admin.enable_user),
        Route("POST", user + ":resetSecret", admin.reset_user_secret),
        Route("POST", user + ":setPassword", admin.set_user_password),
        Route("GET", "/keyless/v1/groups", admin.list_groups),
        Route("GET", group, admin.get_group),
        Route("PUT", group, admin.set_group),
        Route("DELETE", group, admin.delete_group),
        Route("GET", "/keyless/v1/projects", admin.list_projects),
        Route("POST", "/keyless/v1/projects", admin.create_project),
        Route("GET", "/keyless/v1/metadata", admin.get_metadata_attachment),
        Route("PUT", "/keyless/v1/metadata", admin.set_metadata_attachment),
        Route("DELETE", "/keyless/v1/metadata", admin.delete_metadata_attachment),
        Route("GET", "/v1/auditLog", admin.audit_log),
        Route("POST", "/keyless/v1/debug/clock:advance", admin.advance_clock),
        Route("GET", "/healthz", _healthz),
        Route("GET", "/openapi.json", openapi.openapi_document),
    ]


def routes() -> list[Route]:
    """The API port's route table."""
    return [*_service_account_routes(), *_project_routes(), *_org_policy_routes(), *_service_usage_routes(),
            *federation.routes(), *_troubleshooting_routes(), *_oauth_routes(), *_public_key_routes(),
            *_admin_routes(), *console.routes()]


def refusal(method: str, path: str, allow: tuple[str, ...]) -> Response:
    """A path no template matches (404), or a method its templates do not take (405, with ``Allow``)."""
    if not allow:
        error: KeylessError = NotFound(f"The requested URL {path} was not found on this server.")
        return JSONResponse(error.to_json(), status_code=error.http_status)
    message = f"Method {method} is not allowed for {path}; it takes {', '.join(allow)}."
    error = (OAuthError("invalid_request", message, http_status=405) if path in oauth.OAUTH_PATHS
             else MethodNotAllowed(message))
    return JSONResponse(error.to_json(), status_code=error.http_status, headers={"Allow": ", ".join(allow)})


def build_app(keyless: Keyless, *, universe_domains: tuple[str, ...] = (), access_log: bool = False) -> ASGIApp:
    edge = Edge(Host(keyless=keyless, universe_domains=universe_domains), keyless.audit, router=Router(routes()),
                refuse=refusal, limits=keyless.limits, verbs=CredentialVerbs(keyless, universe_domains))
    return AccessLogMiddleware(edge) if access_log else edge
