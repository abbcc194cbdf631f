"""The outermost ASGI layer of each listener: edge limits, the request's audit record and cache scope, then the
route table's handler.

The route table (``keyless.http.routing``) is matched here, once, and its handler called directly: a Starlette
``Request`` in, a ``Response`` out, a ``KeylessError`` answered in its own shape. The credential verbs are the one
exception, the documented fast path: their table entries point at ``keyless.http.credentials``, which answers
them from the ASGI messages (no ``Request``/``Response``, about a fifth of keyless's own work per request).
A path no template matches, or a method none of its templates takes, is answered by the listener's ``refuse``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from keyless.errors import InvalidArgument, KeylessError, Unavailable
from keyless.http.common import error_response, send_json, unexpected
from keyless.http.credentials import CredentialVerbs, VerbHeaders
from keyless.http.guards import reject
from keyless.http.oauth import OAUTH_PATHS
from keyless.http.routing import CredentialVerb, Endpoint, Router
from keyless.service.audit import AuditLog, AuditRecord
from keyless.service.limits import Limits
from keyless.storage.cache import current_request

# The answer to a request the table has no handler for: (method, path, the methods the path takes) -> response.
Refusal = Callable[[str, str, tuple[str, ...]], Response]


class Host:
    """What ``request.app`` is to a handler: the state it reads (``keyless``, ``universe_domains``)."""

    def __init__(self, **state: Any) -> None:
        self.state = State(state)


class Edge:
    def __init__(self, host: Host, audit_log: AuditLog, *, router: Router, refuse: Refusal,
                 limits: Limits | None = None, verbs: CredentialVerbs | None = None) -> None:
        self.host = host
        self.audit_log = audit_log
        self.router = router
        self.refuse = refuse
        self.limits = limits
        self.verbs = verbs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await other_protocol(scope, receive, send)
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
        limits = self.limits
        # The limits are checked here; the refusal is built only for a request over one.
        if limits is not None and (header_bytes > limits.max_header_bytes or len(
                scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
                > limits.max_path_bytes):
            rejection = edge_rejection(scope, header_bytes, limits)
            if rejection is not None:
                await reject(send, *rejection)
                return
        client = scope.get("client")
        # The request's one scope: its audit record, on which cached store reads check the state generation once.
        record = AuditRecord(client[0] if client else "", user_agent.decode("latin-1")[:256])
        scoped = current_request.set(record)
        started = False
        try:
            handler, params, allow = self.router.match(scope["method"], scope["path"])
            if isinstance(handler, CredentialVerb) and params is not None and self.verbs is not None:
                # The verbs answer every outcome themselves, and store their audit entry before the response starts.
                started = True
                await self.verbs(scope, receive, send, params["project"], params["account"], handler.verb, record,
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
                            # Answered below: raised here, it would look like an error after the response started.
                            audit_failed.append(exc)
                            return
                        finally:
                            record.method = None
                    started = True
                await send(message)

            if handler is None or params is None or isinstance(handler, CredentialVerb):
                response = self.refuse(scope["method"], scope["path"], allow)
                await response(scope, receive, send_after_audit)
            else:
                await self._call(scope, receive, send_after_audit, handler, params.groupdict())
            if audit_failed:
                raise audit_failed[0]
        except Exception as exc:
            # An exception that escaped the handler's own answer (a failed audit commit: the database unavailable is a
            # 503 in the route's own shape). Any other: one log line naming its type (never a traceback, whose frames
            # and text may hold request data), and a generic 500 when nothing was sent yet.
            status, content = escaped_error(scope, exc)
            if not started:
                await send_json(send, status, content)
        finally:
            current_request.reset(scoped)

    async def _call(self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint,
                    params: dict[str, str]) -> None:
        scope["app"] = self.host
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except KeylessError as exc:
            response = error_response(exc)
        except Exception as exc:
            response = error_response(unexpected(request.method, request.url.path, exc))
        await response(scope, receive, send)


async def other_protocol(scope: Scope, receive: Receive, send: Send) -> None:
    """Any scope but HTTP: a lifespan (the test client's; the server runs none) has nothing to start or stop; a
    WebSocket is refused."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})


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


def edge_rejection(scope: Scope, header_bytes: int, limits: Limits) -> tuple[KeylessError, int] | None:
    """Requests refused before any parsing: an over-long URL (414) or over-large headers (431)."""
    path_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
    if path_bytes > limits.max_path_bytes:
        return InvalidArgument(f"The request URL is longer than {limits.max_path_bytes} bytes."), 414
    if header_bytes > limits.max_header_bytes:
        return InvalidArgument(f"The request headers are larger than {limits.max_header_bytes} bytes."), 431
    return None
