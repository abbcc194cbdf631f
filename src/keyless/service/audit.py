"""The audit log: one Cloud Audit Logs-shaped entry per credential decision and per policy or key change.

The HTTP layer opens a record per request (``begin``); services annotate it (caller, resource, permissions
checked, request fields that are not secret); the entry is committed before the response starts, so a
credential is never returned unless its audit entry is stored. Token values and keys are never recorded:
a token is named by a keyed hash.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import sys
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

from keyless.clock import Clock
from keyless.domain.lifetimes import format_timestamp
from keyless.storage.base import AuditEntry, Store

_GRPC_CODES = {200: 0, 400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 10, 413: 3, 429: 8, 500: 13, 503: 14}


class AuditRecord:
    """What one request's entry will say; filled in as the request goes (one per request: kept plain)."""

    __slots__ = (
        "authorization",
        "caller_ip",
        "delegation",
        "error",
        "method",
        "principal",
        "request",
        "resource",
        "response",
        "service",
        "user_agent",
    )

    def __init__(self, caller_ip: str, user_agent: str) -> None:
        self.caller_ip = caller_ip
        self.user_agent = user_agent
        self.method: str | None = None
        self.service = ""
        self.principal: str | None = None
        self.resource: str | None = None
        self.delegation: list[str] = []
        self.authorization: list[dict[str, Any]] = []
        self.request: dict[str, Any] = {}
        self.response: dict[str, Any] = {}
        self.error: str | None = None


_current: ContextVar[AuditRecord | None] = ContextVar("keyless_audit", default=None)


def open_record(caller_ip: str, user_agent: str) -> tuple[AuditRecord, object]:
    record = AuditRecord(caller_ip, user_agent)
    return record, _current.set(record)


def close_record(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def begin(method: str, service: str, **request: Any) -> None:
    """Mark the current request as audited under ``method``."""
    record = _current.get()
    if record is not None:
        record.method = method
        record.service = service
        record.request.update({k: bounded(v) for k, v in request.items() if v is not None})


def note(*, principal: str | None = None, resource: str | None = None, delegation: list[str] | None = None,
         **response: Any) -> None:
    record = _current.get()
    if record is None:
        return
    if principal is not None:
        record.principal = principal
    if resource is not None:
        record.resource = resource
    if delegation is not None:
        record.delegation = delegation
    record.response.update({k: v for k, v in response.items() if v is not None})


def bounded(value: Any, depth: int = 0) -> Any:
    """A copy of request data safe to serialise: nesting, lengths and types are bounded (a caller's body is
    recorded as sent, within reason)."""
    if depth > 8:
        return "..."
    if isinstance(value, str):
        return value if len(value) <= 1024 else value[:1024] + "..."
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, list):
        return [bounded(v, depth + 1) for v in value[:100]]
    if isinstance(value, dict):
        return {str(k)[:256]: bounded(v, depth + 1) for k, v in list(value.items())[:100]}
    return str(value)[:256]


def note_request(**request: Any) -> None:
    record = _current.get()
    if record is not None:
        record.request.update({k: bounded(v) for k, v in request.items() if v is not None})


def note_authorization(permission: str, resource: str, granted: bool) -> None:
    record = _current.get()
    if record is not None and record.method is not None:
        record.authorization.append({"permission": permission, "resource": resource, "granted": granted})


def note_error(message: str) -> None:
    record = _current.get()
    if record is not None:
        record.error = message


class AuditLog:
    def __init__(self, store: Store, clock: Clock, hash_key: bytes, sink: TextIO | None = None) -> None:
        self._store = store
        self._clock = clock
        self._hash_key = hash_key
        self._sink = sink
        self._pending: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def token_hash(self, value: str) -> str:
        """How an entry names a token or signature without holding it."""
        return hmac.digest(self._hash_key, value.encode(), "sha256").hex()[:32]

    def entry(self, record: AuditRecord, http_status: int, now: float) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": record.service,
            "methodName": record.method,
            "resourceName": record.resource or "",
            "authenticationInfo": {"principalEmail": record.principal or ""},
            "requestMetadata": {"callerIp": record.caller_ip, "callerSuppliedUserAgent": record.user_agent},
            "authorizationInfo": record.authorization,
            "request": record.request,
        }
        if record.delegation:
            payload["authenticationInfo"]["serviceAccountDelegationInfo"] = [
                {"firstPartyPrincipal": {"principalEmail": email}} for email in record.delegation]
        if record.response:
            payload["response"] = record.response
        if http_status >= 400:
            payload["status"] = {"code": _GRPC_CODES.get(http_status, 2), "message": record.error or ""}
        else:
            payload["status"] = {}
        micros = int(now * 1_000_000)
        return {
            "insertId": f"{micros:x}{secrets.token_hex(4)}",
            "timestamp": format_timestamp(now).replace("Z", f".{micros % 1_000_000:06d}Z"),
            "severity": "NOTICE" if http_status < 400 else "ERROR",
            "logName": f"keyless/logs/cloudaudit.googleapis.com%2F{_log_kind(record.method or '')}",
            "protoPayload": payload,
        }

    async def commit(self, record: AuditRecord, http_status: int) -> None:
        """Store the entry; returns once it is committed. Entries of concurrent requests share one transaction
        (group commit): the first to arrive schedules a flush, those arriving before it runs ride along."""
        now = self._clock.now()
        entry = self.entry(record, http_status, now)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((AuditEntry(
            insert_id=entry["insertId"], timestamp=now, method=record.method or "",
            principal=record.principal or "", resource=record.resource or "", denied=http_status >= 400,
            body=entry), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._store.append_audit([entry for entry, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            if self._sink is not None:
                self._sink.write("".join(orjson.dumps(e.body).decode() + "\n" for e, _ in batch))
                self._sink.flush()
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


def _log_kind(method: str) -> str:
    return "data_access" if method in {"GenerateAccessToken", "GenerateIdToken", "SignBlob", "SignJwt",
                                       "oauth2.Token", "metadata.GetAccessToken",
                                       "metadata.GetIdentityToken"} else "activity"


def open_sink(target: str | None) -> TextIO | None:
    """``--audit-log -`` for stdout, a path for a JSON-lines file (appended), None for database only."""
    if not target:
        return None
    if target == "-":
        return sys.stdout
    return open(target, "a", encoding="utf-8")
