"""The outermost ASGI layer of each listener: edge limits, the request's audit record and cache scope, then the
route's handler.

The hot routes skip Starlette's middleware stack and router (about 6 microseconds of a 135-microsecond
`generateAccessToken` measured in process, before the other speed work): the credential verbs
(``keyless.http.credentials``) are answered here from the ASGI messages and only here; ``/token``, the
metadata server and the rest of ``serviceAccounts/...`` are matched by prefix and their endpoints called
directly. Those are the functions Starlette routes to, taking the same ``Request``; their exceptions go to
the same handlers the Starlette app registers, so the wire is identical either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from keyless.errors import InvalidArgument, KeylessError, Unavailable
from keyless.http.common import error_response, send_json, unexpected
from keyless.http.credentials import CredentialVerbs, VerbHeaders
from keyless.http.guards import reject
from keyless.http.oauth import OAUTH_PATHS
from keyless.service import audit
from keyless.service.audit import AuditLog
from keyless.service.limits import Limits
from keyless.storage.cache import enter_request, leave_request

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """Requests whose path starts with ``prefix`` and matches ``route`` (one of the Starlette app's own
    routes, so the path parameters are the ones its router would give) go straight to its endpoint."""

    prefix: str
    route: Route
    methods: frozenset[str] = frozenset({"POST"})


class Edge:
    def __init__(self, app: Starlette, audit_log: AuditLog, *, limits: Limits | None = None,
                 direct: tuple[DirectRoute, ...] = (), verbs: CredentialVerbs | None = None) -> None:
        self.app = app
        self.audit_log = audit_log
        self.limits = limits
        self.direct = direct
        self.verbs = verbs

    def _direct_route(self, scope: Scope) -> tuple[Endpoint, dict[str, str]] | None:
        path: str = scope["path"]
        for direct in self.direct:
            if path.startswith(direct.prefix) and scope["method"] in direct.methods:
                match = direct.route.path_regex.match(path)
                if match is not None:
                    endpoint: Endpoint = direct.route.endpoint
                    return endpoint, match.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One pass over the headers for the edge's limits and the credential verbs (the first of repeated
        # headers counts, as in Starlette).
        user_agent = b""
        authorization: bytes | None = None
        host = b""
        content_length: bytes | None = None
        user_project: bytes | None = None
        header_bytes = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"host":
                host = host or value
            elif name == b"content-length":
                if content_length is None:
                    content_length = value
            elif name == b"user-agent" and not user_agent:
                user_agent = value
            elif name == b"x-goog-user-project" and user_project is None:
                user_project = value
        if self.limits is not None:
            rejection = edge_rejection(scope, header_bytes, self.limits)
            if rejection is not None:
                await reject(send, *rejection)
                return
        client = scope.get("client")
        record, token = audit.open_record(client[0] if client else "", user_agent.decode("latin-1")[:256])
        scoped = enter_request()  # cached store reads check the state generation once per request
        started = False
        try:
            verbs = self.verbs
            if verbs is not None and (verb := verbs.match(scope)) is not None:
                # The verbs answer every outcome themselves, and store their audit entry before the response starts.
                started = True
                await verbs(scope, receive, send, verb, record,
                            VerbHeaders(authorization, host, content_length, user_project))
                return
            audit_log = self.audit_log
            audit_failed: list[Exception] = []

            async def send_after_audit(message: Message) -> None:
                nonlocal started
                if audit_failed:
                    return  # the response whose entry could not be stored is never sent
                if message["type"] == "http.response.start":
                    if record.method is not None:
                        # The credential in this response is released only once its entry is stored.
                        try:
                            await audit_log.commit(record, int(message["status"]))
                        except Exception as exc:
                            # Answered below, outside the app: raised here, Starlette would take it for an error
                            # after the response started.
                            audit_failed.append(exc)
                            return
                        finally:
                            record.method = None
                    started = True
                await send(message)

            direct = self._direct_route(scope)
            if direct is None:
                await self.app(scope, receive, send_after_audit)
            else:
                await self._call_direct(scope, receive, send_after_audit, *direct)
            if audit_failed:
                raise audit_failed[0]
        except Exception as exc:
            # Starlette's ServerErrorMiddleware answers through the app's handler and then re-raises for the server
            # to log (a traceback, whose frames and text may hold request data); an exception can also escape the
            # handlers (a failed audit commit: the database unavailable is a 503 in the route's own shape). Any
            # other: one log line naming its type, and a generic 500 when nothing was sent yet.
            status, content = escaped_error(scope, exc)
            if not started:
                await send_json(send, status, content)
        finally:
            leave_request(scoped)
            audit.close_record(token)

    async def _call_direct(self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint,
                           params: dict[str, str]) -> None:
        scope["app"] = self.app
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)

    async def _handle(self, request: Request, exc: Exception) -> Response:
        for cls in type(exc).__mro__:
            if cls is Exception:  # the app's catch-all does not log (Starlette re-raises after it); this does
                break
            handler: Any = self.app.exception_handlers.get(cls)
            if handler is not None:
                result: Response = await handler(request, exc)
                return result
        return await unexpected_error(request, exc)


def escaped_error(scope: Scope, exc: Exception) -> tuple[int, dict[str, Any]]:
    """The answer to an exception that no handler answered: the database unavailable as a 503, in the OAuth shape
    on the OAuth endpoints; anything else a logged 500."""
    if isinstance(exc, Unavailable):
        if scope["path"] in OAUTH_PATHS:
            oauth = exc.oauth()
            return oauth.http_status, oauth.to_json()
        return exc.http_status, exc.to_json()
    error = unexpected(scope["method"], scope["path"], exc)
    return error.http_status, error.to_json()


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """The answer to an exception no handler claims, logged here (the edge's direct routes swallow it)."""
    return error_response(unexpected(request.method, request.url.path, exc))


async def internal_error(request: Request, exc: Exception) -> Response:
    """Starlette's ``Exception`` handler: the log line is written before the answer (ServerErrorMiddleware then
    re-raises the exception to the edge, which does not log it again)."""
    return error_response(unexpected(request.method, request.url.path, exc))


def edge_rejection(scope: Scope, header_bytes: int, limits: Limits) -> tuple[KeylessError, int] | None:
    """Requests refused before any parsing: an over-long URL (414) or over-large headers (431)."""
    path_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
    if path_bytes > limits.max_path_bytes:
        return InvalidArgument(f"The request URL is longer than {limits.max_path_bytes} bytes."), 414
    if header_bytes > limits.max_header_bytes:
        return InvalidArgument(f"The request headers are larger than {limits.max_header_bytes} bytes."), 431
    return None
