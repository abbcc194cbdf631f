"""Metadata routes, with the header rules that make google-auth (Python) and gcp-metadata (Node) detect it:
every response carries ``Metadata-Flavor: Google`` and a ``Content-Type``; requests must carry
``Metadata-Flavor: Google`` and no ``X-Forwarded-For`` or ``Forwarded`` header."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.errors import KeylessError
from keyless.http.edge import DirectRoute, Edge
from keyless.service import audit, minting
from keyless.service.app import Keyless
from keyless.service.authn import CLOUD_PLATFORM
from keyless.service.grants import ATTACHED_META as ATTACHED_META  # where server.py's --attach finds it
from keyless.storage.base import ServiceAccount

BASE_HEADERS = {"Metadata-Flavor": "Google", "Server": "Metadata Server for VM"}
DEFAULT_SCOPES = (CLOUD_PLATFORM, "https://www.googleapis.com/auth/userinfo.email")
INSTANCE = {"id": "4520031799277581759", "name": "keyless", "zone": "projects/{number}/zones/us-central1-a",
            "hostname": "keyless.c.{project}.internal"}


def _text(body: str, status: int = 200, content_type: str = "application/text") -> Response:
    return Response(body, status_code=status, media_type=content_type, headers=BASE_HEADERS)


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=BASE_HEADERS)


def _error(status: int, message: str) -> Response:
    audit.note_error(message)
    return _text(message + "\n", status, "text/html; charset=UTF-8")


class MetadataServer:
    def __init__(self, keyless: Keyless) -> None:
        self.keyless = keyless

    async def attached(self) -> ServiceAccount | None:
        email = await self.keyless.store.get_meta(ATTACHED_META)
        if not email:
            return None
        return await self.keyless.core.resolve_account(email)

    async def _project(self) -> tuple[str, str]:
        project = await self.keyless.store.get_project(self.keyless.settings.default_project)
        assert project is not None
        return project.project_id, project.number

    async def dispatch(self, request: Request) -> Response:
        # Present at all, even empty, or in its RFC 7239 form: the request came through a proxy.
        if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
            return _error(403, "Your client does not have permission to get URL from this server. "
                          "Detected X-Forwarded-For header.")
        path = request.url.path
        if path in ("/", ""):
            # google-auth's ping sends the flavor header; answer it either way so curl can see we are up.
            return _text("computeMetadata/\n")
        flavor = request.headers.get("metadata-flavor", "")
        legacy = request.headers.get("x-google-metadata-request", "")
        if flavor.lower() != "google" and legacy.lower() != "true":
            return _error(403, "Your client does not have permission to get URL from this server. "
                          "Missing Metadata-Flavor:Google header.")
        if not path.startswith("/computeMetadata/v1"):
            return _error(404, f"The requested URL {path} was not found on this server.")
        rest = path[len("/computeMetadata/v1"):].strip("/")
        try:
            return await self._route(request, rest)
        except KeylessError as exc:
            return _error(exc.http_status, f"Unable to generate token; IAM returned {exc.http_status}: {exc.message}")

    async def _route(self, request: Request, rest: str) -> Response:
        project_id, number = await self._project()
        if rest == "":
            return _text("instance/\nproject/\nuniverse/\n")
        if rest == "project/project-id":
            return _text(project_id)
        if rest == "project/numeric-project-id":
            return _text(number)
        if rest == "project":
            return _text("numeric-project-id\nproject-id\n")
        if rest == "universe/universe-domain":
            return _text("googleapis.com")
        if rest == "instance":
            return _text("hostname\nid\nname\nservice-accounts/\nzone\n")
        if rest.startswith("instance/") and rest[9:] in INSTANCE:
            return _text(INSTANCE[rest[9:]].format(number=number, project=project_id))
        if rest == "instance/service-accounts":
            account = await self.attached()
            return _text(f"default/\n{account.email}/\n" if account else "")
        if rest.startswith("instance/service-accounts/"):
            return await self._service_account(request, rest[len("instance/service-accounts/"):], project_id,
                                               number)
        return _error(404, f"The requested URL /computeMetadata/v1/{rest} was not found on this server.")

    async def _service_account(self, request: Request, rest: str, project_id: str, number: str) -> Response:
        alias, _, leaf = rest.partition("/")
        account = await self.attached()
        if account is None or alias not in ("default", account.email):
            return _error(404, "Service account not enabled on this instance")
        if leaf == "":
            if request.query_params.get("recursive", "").lower() == "true":
                return _json({"aliases": ["default"], "email": account.email, "scopes": list(DEFAULT_SCOPES)})
            return _text("aliases\nemail\nidentity\nscopes\ntoken\n")
        if leaf == "email":
            return _text(account.email)
        if leaf == "aliases":
            return _text("default")
        if leaf == "scopes":
            return _text("\n".join(DEFAULT_SCOPES))
        if leaf == "token":
            return await self._token(request, account)
        if leaf == "identity":
            return await self._identity(request, account, project_id, number)
        return _error(404, f"The requested URL was not found on this server: {leaf}")

    async def _token(self, request: Request, account: ServiceAccount) -> Response:
        audit.begin("metadata.GetAccessToken", "metadata.google.internal")
        audit.note(principal=account.email, resource=f"projects/-/serviceAccounts/{account.unique_id}")
        if account.disabled:
            audit.note_error("service account disabled")
            return _error(403, f"Unable to generate access token; IAM returned 403 Forbidden: Service account "
                          f"{account.email} is disabled.")
        raw = request.query_params.get("scopes", "")
        scopes = tuple(s for s in raw.replace(" ", ",").split(",") if s) or DEFAULT_SCOPES
        audit.note_request(scopes=list(scopes))
        minted = minting.access_token(self.keyless.core, "serviceAccount", account.unique_id, scopes, 3600)
        return _json({"access_token": minted.token, "expires_in": 3599, "token_type": "Bearer"})

    async def _identity(self, request: Request, account: ServiceAccount, project_id: str, number: str) -> Response:
        audience = request.query_params.get("audience", "")
        audit.begin("metadata.GetIdentityToken", "metadata.google.internal", audience=audience)
        audit.note(principal=account.email, resource=f"projects/-/serviceAccounts/{account.unique_id}")
        if not audience:
            return _error(400, "non-empty audience parameter required")
        if account.disabled:
            return _error(403, f"Service account {account.email} is disabled.")
        fmt = request.query_params.get("format", "standard")
        if fmt not in ("standard", "full"):
            return _error(400, "format must be standard or full")
        claims = minting.account_id_claims(self.keyless.core, account, audience, include_email=True)
        if fmt == "full":
            claims["google"] = {"compute_engine": {
                "project_id": project_id, "project_number": int(number), "zone": "us-central1-a",
                "instance_id": INSTANCE["id"], "instance_name": INSTANCE["name"],
                "instance_creation_timestamp": 1_700_000_000,
            }}
            if request.query_params.get("licenses", "").upper() == "TRUE":
                claims["google"]["compute_engine"]["license_id"] = []
        token = await minting.id_token(self.keyless.core, claims)
        return _text(token, content_type="text/html; charset=utf-8")


def build_metadata_app(keyless: Keyless) -> Edge:
    server = MetadataServer(keyless)
    route = Route("/{path:path}", server.dispatch, methods=["GET", "POST"])
    app = Starlette(routes=[route])
    app.state.keyless = keyless
    return Edge(app, keyless.audit, direct=(DirectRoute("/", route, frozenset({"GET", "HEAD", "POST"})),))
