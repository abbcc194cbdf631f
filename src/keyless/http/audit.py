"""ASGI middleware that opens an audit record per request and commits it before the response starts."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.service import audit
from keyless.service.audit import AuditLog
from keyless.storage.cache import request_scope


class AuditMiddleware:
    def __init__(self, app: ASGIApp, log: AuditLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        user_agent = ""
        for name, value in scope.get("headers", ()):
            if name == b"user-agent":
                user_agent = value.decode("latin-1")[:256]
                break
        record, token = audit.open_record(client[0] if client else "", user_agent)

        async def send_after_audit(message: Message) -> None:
            if message["type"] == "http.response.start" and record.method is not None:
                # The credential in this response is released only once its entry is stored.
                await self.log.commit(record, int(message["status"]))
                record.method = None
            await send(message)

        try:
            with request_scope():  # cached store reads check the state generation once per request
                await self.app(scope, receive, send_after_audit)
        finally:
            audit.close_record(token)
