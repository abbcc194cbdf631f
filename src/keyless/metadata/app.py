"""Metadata routes, with the header rules that make google-auth (Python) and gcp-metadata (Node) detect it:
every response carries ``Metadata-Flavor: Google`` and a ``Content-Type``; requests must carry
``Metadata-Flavor: Google`` and no ``X-Forwarded-For`` or ``Forwarded`` header.

Once those rules pass, a plain route table answers: the path under ``/computeMetadata/v1/`` (without its
surrounding slashes) names its handler, and ``instance/service-accounts/{alias}/…`` the handler of the attached
account's entry. Every path takes GET, HEAD and POST (another method is a 405)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import KeylessError
from keyless.http.edge import Edge, Host
from keyless.http.routing import Route, Router
from keyless.service import audit, minting
from keyless.service.app import Keyless
from keyless.service.authn import CLOUD_PLATFORM
from keyless.service.grants import ATTACHED_META as ATTACHED_META  # where server.py's --attach finds it
from keyless.storage.base import ServiceAccount

BASE_HEADERS = {"Metadata-Flavor": "Google", "Server": "Metadata Server for VM"}
DEFAULT_SCOPES = (CLOUD_PLATFORM, "https://www.googleapis.com/auth/userinfo.email")
INSTANCE = {"id": "4520031799277581759", "name": "keyless", "zone": "projects/{number}/zones/us-central1-a",
            "hostname": "keyless.c.{project}.internal"}
METHODS = ("GET", "HEAD", "POST")
PREFIX = "/computeMetadata/v1"
Handler = Callable[[Request], Awaitable[Response]]
AccountHandler = Callable[[Request, ServiceAccount], Awaitable[Response]]


def _text(body: str, status: int = 200, content_type: str = "application/text") -> Response:
    return Response(body, status_code=status, media_type=content_type, headers=BASE_HEADERS)


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=BASE_HEADERS)


def _error(status: int, message: str) -> Response:
    audit.note_error(message)
    return _text(message + "\n", status, "text/html; charset=UTF-8")


def _listing(body: str) -> Handler:
    async def answer(request: Request) -> Response:
        return _text(body)
    return answer


class MetadataServer:
    def __init__(self, keyless: Keyless) -> None:
        self.keyless = keyless
        # The paths under /computeMetadata/v1/, without their surrounding slashes.
        self.routes: dict[str, Handler] = {
            "": _listing("instance/\nproject/\nuniverse/\n"),
            "project": _listing("numeric-project-id\nproject-id\n"),
            "project/project-id": self._project_id,
            "project/numeric-project-id": self._project_number,
            "universe/universe-domain": _listing("googleapis.com"),
            "instance": _listing("hostname\nid\nname\nservice-accounts/\nzone\n"),
            **{f"instance/{name}": self._instance(name) for name in INSTANCE},
            "instance/service-accounts": self._accounts,
        }
        # The entries of instance/service-accounts/{alias}/, for the attached account.
        self.account_routes: dict[str, AccountHandler] = {
            "": self._account,
            "email": self._email,
            "aliases": self._aliases,
            "scopes": self._scopes,
            "token": self._token,
            "identity": self._identity,
        }

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
        if not path.startswith(PREFIX):
            return _error(404, f"The requested URL {path} was not found on this server.")
        rest = path[len(PREFIX):].strip("/")
        try:
            handler = self.routes.get(rest)
            if handler is not None:
                return await handler(request)
            if rest.startswith("instance/service-accounts/"):
                return await self._service_account(request, rest[len("instance/service-accounts/"):])
        except KeylessError as exc:
            return _error(exc.http_status, f"Unable to generate token; IAM returned {exc.http_status}: {exc.message}")
        return _error(404, f"The requested URL {PREFIX}/{rest} was not found on this server.")

    async def _project_id(self, request: Request) -> Response:
        project_id, _ = await self._project()
        return _text(project_id)

    async def _project_number(self, request: Request) -> Response:
        _, number = await self._project()
        return _text(number)

    def _instance(self, name: str) -> Handler:
        async def answer(request: Request) -> Response:
            project_id, number = await self._project()
            return _text(INSTANCE[name].format(number=number, project=project_id))
        return answer

    async def _accounts(self, request: Request) -> Response:
        account = await self.attached()
        return _text(f"default/\n{account.email}/\n" if account else "")

    async def _service_account(self, request: Request, rest: str) -> Response:
        alias, _, leaf = rest.partition("/")
        account = await self.attached()
        if account is None or alias not in ("default", account.email):
            return _error(404, "Service account not enabled on this instance")
        handler = self.account_routes.get(leaf)
        if handler is None:
            return _error(404, f"The requested URL was not found on this server: {leaf}")
        return await handler(request, account)

    async def _account(self, request: Request, account: ServiceAccount) -> Response:
        if request.query_params.get("recursive", "").lower() == "true":
            return _json({"aliases": ["default"], "email": account.email, "scopes": list(DEFAULT_SCOPES)})
        return _text("aliases\nemail\nidentity\nscopes\ntoken\n")

    async def _email(self, request: Request, account: ServiceAccount) -> Response:
        return _text(account.email)

    async def _aliases(self, request: Request, account: ServiceAccount) -> Response:
        return _text("default")

    async def _scopes(self, request: Request, account: ServiceAccount) -> Response:
        return _text("\n".join(DEFAULT_SCOPES))

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

    async def _identity(self, request: Request, account: ServiceAccount) -> Response:
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
        project_id, number = await self._project()
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


def _refusal(method: str, path: str, allow: tuple[str, ...]) -> Response:
    response = _error(405, f"Method {method} is not allowed; it takes {', '.join(allow)}.")
    response.headers["Allow"] = ", ".join(allow)
    return response


def build_metadata_app(keyless: Keyless) -> Edge:
    server = MetadataServer(keyless)
    # One route: the metadata server's own rules come before its table (a path it does not know is refused for a
    # missing Metadata-Flavor header first).
    router = Router(Route(method, "/{path:path}", server.dispatch) for method in METHODS)
    return Edge(Host(keyless=keyless), keyless.audit, router=router, refuse=_refusal)
