"""At the edge: the answer to a request refused before routing, and an access log that never holds a token."""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.errors import KeylessError
from keyless.http.common import send_json

access_log = logging.getLogger("keyless.access")
_SECRET_PARAMS = re.compile(r"(?i)(^|&)(access_token|id_token|token|assertion|refresh_token|client_secret|key)=[^&]*")


def redact_query(query: str) -> str:
    """Query strings such as ``tokeninfo?access_token=...`` lose their secret values."""
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}{m.group(2)}=REDACTED", query)


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
