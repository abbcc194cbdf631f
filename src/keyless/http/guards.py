"""At the edge: the answer to a request refused before routing, and an access log that never holds a token."""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.errors import KeylessError
from keyless.http.common import send_json

access_log = logging.getLogger("keyless.access")
# Parameters whose value is a credential (compared casefolded, after decoding).
_SECRET_PARAMS = frozenset({"access_token", "id_token", "token", "assertion", "refresh_token", "client_secret", "key",
                            "client_assertion", "subject_token", "actor_token", "code", "code_verifier", "password",
                            "csrf_token"})


def redact_query(query: str) -> str:
    """Query strings such as ``tokeninfo?access_token=...`` lose their secret values. A name is compared as the
    server reads it, percent- and '+'-decoded (``acc%65ss_token`` is ``access_token``), and case-insensitively."""
    fields = query.split("&")
    for index, field in enumerate(fields):
        name, sep, _value = field.partition("=")
        if sep and unquote_plus(name).casefold() in _SECRET_PARAMS:
            fields[index] = f"{name}=REDACTED"
    return "&".join(fields)


async def reject(send: Send, error: KeylessError, status: int) -> None:
    """Answer at the edge, before any route: the error in Google's shape with ``status``."""
    error.http_status = status  # the body's code is the HTTP status, as in every other error
    await send_json(send, status, error.to_json())


class AccessLogMiddleware:
    """One line per request: client, method, path with redacted query, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope["path"] + (f"?{redact_query(query)}" if query else "")
            client = scope.get("client") or ("-", 0)
            access_log.info('%s "%s %s" %d %.1fms', client[0], scope["method"], target, status,
                            (time.perf_counter() - started) * 1000)
