"""The audit log: one Cloud Audit Logs-shaped entry per credential decision and per policy or key change.

The wire adapter that receives a request makes its record (``AuditRecord``, the request's scope in
``current_request``) and marks it audited (``begin``); services annotate it (caller, resource, permissions
checked, request fields that are not secret); the entry is committed before the response starts, so a
credential is never returned unless its audit entry is stored. Token values and keys are never recorded:
a token is named by a keyed hash. An entry is stored as its varying parts (``stored_body``) and rendered
whole (``render``) when it is read or streamed to the ``--audit-log`` sink.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import sys
from typing import Any, TextIO

import orjson

from keyless.clock import Clock
from keyless.domain.lifetimes import format_timestamp
from keyless.errors import Unavailable
from keyless.service import denials
from keyless.storage.base import AuditEntry, ServiceAccount, Store
from keyless.storage.cache import UNCHECKED, RequestScope, current_request

_ACCOUNT_RESOURCE = re.compile(r"projects/-/serviceAccounts/([0-9]+)(?:/|$)")

# A 503 answer is the database unavailable (errors.Unavailable): nothing was decided or released, and its entry
# could not be stored either, so it is answered at once without one.
UNAUDITED_STATUS = 503

# The IAM Credentials request fields an entry records, under their proto3 JSON names, whatever the wire (payloads
# are recorded by hash, never verbatim).
CREDENTIAL_REQUEST_FIELDS = ("scope", "lifetime", "delegates", "audience", "includeEmail", "useEmailAzp")
# A request's recorded fields up to this size (as JSON) are stored as they are; larger ones are bounded.
MAX_PLAIN_REQUEST = 4096

_GRPC_CODES = {200: 0, 400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 10, 413: 3, 429: 8, 500: 13, 503: 14}


class AuditRecord(RequestScope):
    """What one request's entry will say; filled in as the request goes (one per request: kept plain). It is the
    request's scope too: the adapter sets it in ``current_request``, where the read cache keeps the request's
    generation on it and the functions below find it."""

    __slots__ = (
        "authorization",
        "caller_ip",
        "delegation",
        "error",
        "explanation",
        "method",
        "principal",
        "request",
        "resource",
        "response",
        "service",
        "user_agent",
    )

    def __init__(self, caller_ip: str, user_agent: str) -> None:
        self.generation = UNCHECKED
        self.caller_ip = caller_ip
        self.user_agent = user_agent
        self.method: str | None = None
        self.service = ""
        self.principal: str | None = None
        self.resource: str | None = None
        self.delegation: list[str] = []
        self.authorization: list[tuple[str, str, bool]] = []  # (permission, resource, granted)
        self.request: dict[str, Any] = {}
        self.response: dict[str, Any] = {}
        self.error: str | None = None
        self.explanation: dict[str, Any] | None = None  # why a request was refused, for the owner only


# The annotating functions run several times on every request: plain loops, as a comprehension is a function
# call of its own.


def begin(method: str, service: str, **request: Any) -> None:
    """Mark the current request as audited under ``method``, with request fields worth recording."""
    record = current_request.get()
    if isinstance(record, AuditRecord):
        record.method = method
        record.service = service
        stored = record.request
        for key, value in request.items():
            if value is not None:
                stored[key] = value


def note(*, principal: str | None = None, resource: str | None = None, delegation: list[str] | None = None,
         authorization: tuple[tuple[str, str, bool], ...] = (), **response: Any) -> None:
    """What the current request did: who calls, what about (a credential decision, remembered or just made, notes
    the account's resource, the delegation and each hop's (permission, resource, granted) check: ``authorization``,
    recorded when the request is audited), and response fields worth recording."""
    record = current_request.get()
    if not isinstance(record, AuditRecord):
        return
    if principal is not None:
        record.principal = principal
    if resource is not None:
        record.resource = resource
    if delegation is not None:
        record.delegation = delegation
    if authorization and record.method is not None:
        record.authorization.extend(authorization)
    stored = record.response
    for key, value in response.items():
        if value is not None:
            stored[key] = value


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
    """Request fields worth recording (as sent: ``stored_body`` bounds what is stored)."""
    record = current_request.get()
    if isinstance(record, AuditRecord):
        stored = record.request
        for key, value in request.items():
            if value is not None:
                stored[key] = value


def note_authorization(permission: str, resource: str, granted: bool) -> None:
    record = current_request.get()
    if isinstance(record, AuditRecord) and record.method is not None:
        record.authorization.append((permission, resource, granted))


def explaining() -> bool:
    """Whether the current request will have an audit entry, where the explanation of a denial would go (a
    denial of a request that is not audited, a read, is not worth explaining)."""
    record = current_request.get()
    return isinstance(record, AuditRecord) and record.method is not None


def note_explanation(explanation: dict[str, Any]) -> None:
    """Why the request is being refused, in words for the owner (``protoPayload.metadata.explanation``). Only
    the audit entry carries it: the caller's answer is the one Google gives."""
    record = current_request.get()
    if isinstance(record, AuditRecord):
        record.explanation = explanation


def note_error(message: str) -> None:
    record = current_request.get()
    if isinstance(record, AuditRecord):
        record.error = message


class AuditLog:
    # Group commit gathers the entries of every request the event loop has ready before it commits: it yields
    # to the loop until a turn adds no entry, for at most GATHER_TURNS turns and GATHER_SECONDS. Under load a
    # transaction then carries 13-19 entries instead of 5-6 (SQLite time per entry 9-14 us instead of 12-20,
    # over HTTP with two workers; generateAccessToken's CPU per request -9%); when idle, the first turn adds
    # nothing and the commit follows at once. The time bound keeps the latency price small at moderate load,
    # where each turn may run another request's RSA signature (a quarter of a millisecond) before the commit.
    GATHER_TURNS = 8
    GATHER_SECONDS = 0.001

    def __init__(self, store: Store, clock: Clock, sink: TextIO | None = None) -> None:
        self._store = store
        self._clock = clock
        self._sink = sink
        self._pending: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        # insertId: the time, then this process's random tag and a counter (unique without a random read each).
        self._id_tag = secrets.token_hex(4)
        self._id_count = itertools.count()
        self._flusher: asyncio.Task[None] | None = None
        # The accounts entries are about, by unique id, for their email: kept for good, as an id's email and
        # project never change (a deleted account keeps both; an email created again gets a new id).
        self._accounts: dict[str, ServiceAccount] = {}

    async def rendered(self, entries: list[AuditEntry], *, suggest: bool = True) -> list[dict[str, Any]]:
        """The entries as Cloud Audit Logs ``LogEntry`` objects, those about a service account with its email
        (``render``): the email is looked up when entries are read or streamed, never when one is written.
        ``suggest``: a denial naming an account or project that is not there gets the nearest existing one
        (``denials.with_suggestion``; not when streaming, which happens before the response). A denial also gets
        the request that explains it in full (``denials.with_troubleshooting``)."""
        out = []
        seen: dict[Any, Any] = {}
        for entry in entries:
            unique_id = account_of(entry.resource)
            rendered = render(entry, None if unique_id is None else await self._account(unique_id))
            explanation = entry.body.get("explanation")
            if isinstance(explanation, dict):
                payload = rendered["protoPayload"]
                explanation = await denials.with_suggestion(self._store, explanation, seen) \
                    if suggest and denials.FIND_NEAREST in explanation else payload["metadata"]["explanation"]
                request = payload.get("request")
                payload["metadata"]["explanation"] = denials.with_troubleshooting(
                    explanation, str(payload.get("methodName", "")), request if isinstance(request, dict) else {},
                    str(payload.get("authenticationInfo", {}).get("principalEmail", "")))
            out.append(rendered)
        return out

    async def _account(self, unique_id: str) -> ServiceAccount | None:
        account = self._accounts.get(unique_id)
        if account is None:
            try:
                account = await self._store.get_service_account(unique_id)
            except Exception:  # the email is an addition: an entry is still read, or streamed, without it
                return None
            if account is not None:
                if len(self._accounts) >= 10_000:
                    self._accounts.clear()
                self._accounts[unique_id] = account
        return account

    async def commit(self, record: AuditRecord, http_status: int) -> None:
        """Store the entry; returns once it is committed. Entries of concurrent requests share one transaction
        (group commit): the first to arrive schedules a flush, those arriving before it runs ride along. A 503
        answer stores nothing (``UNAUDITED_STATUS``)."""
        if http_status == UNAUDITED_STATUS:
            return
        now = self._clock.now()
        micros = int(now * 1_000_000)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((AuditEntry(
            insert_id=f"{micros:x}{self._id_tag}{next(self._id_count):x}", timestamp=now, method=record.method or "",
            principal=record.principal or "", resource=record.resource or "", denied=http_status >= 400,
            body=stored_body(record, http_status)), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def commit_system_change(self, method: str, resource: str, **response: Any) -> None:
        """Store the entry of a change keyless makes itself, outside any request (at start): no caller."""
        record = AuditRecord("", "")
        record.method, record.service, record.resource = method, "keyless", resource
        record.response = {key: value for key, value in response.items() if value is not None}
        await self.commit(record, 200)

    async def prune(self, retention: float, *, batch: int = 5000) -> int:
        """Delete the entries older than ``retention`` seconds, a batch per transaction (writers wait for one
        batch at most); returns how many went."""
        before = self._clock.now() - retention
        deleted = 0
        while True:
            count = await self._store.prune_audit(before, batch)
            deleted += count
            if count < batch:
                return deleted

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            seen, turns, until = 0, 0, loop.time() + self.GATHER_SECONDS
            while len(self._pending) != seen and turns < self.GATHER_TURNS and loop.time() < until:
                seen, turns = len(self._pending), turns + 1
                await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            entries = []
            for entry, _ in batch:
                entries.append(entry)
            try:
                await self._store.append_audit(entries)
            except Exception as exc:
                if isinstance(exc, Unavailable):
                    # The entries that queued meanwhile fail with it rather than wait for a database that just
                    # failed: their requests are answered within one timeout, and none has released anything.
                    batch += self._pending
                    self._pending = []
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            if self._sink is not None:
                lines = await self.rendered(entries, suggest=False)
                self._sink.write("".join(orjson.dumps(line).decode() + "\n" for line in lines))
                self._sink.flush()
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


def stored_body(record: AuditRecord, http_status: int) -> dict[str, Any]:
    """What an entry stores beyond its columns (id, time, method, principal, resource, denied): the parts of
    the Cloud Audit Logs entry that vary, under half its size; ``render`` rebuilds the rest."""
    body: dict[str, Any] = {"service": record.service, "callerIp": record.caller_ip}
    if record.user_agent:
        body["userAgent"] = record.user_agent
    if record.delegation:
        body["delegation"] = record.delegation
    if record.authorization:
        body["authorization"] = record.authorization
    request = record.request
    if request:
        # As sent when it is small and plain (one C call tells); else a bounded copy (``bounded``).
        try:
            plain = len(orjson.dumps(request)) <= MAX_PLAIN_REQUEST
        except orjson.JSONEncodeError:
            plain = False
        body["request"] = request if plain else bounded(request)
    if record.response:
        body["response"] = record.response
    if http_status >= 400:
        body["status"] = {"code": _GRPC_CODES.get(http_status, 2), "message": record.error or ""}
        if record.explanation is not None:
            body["explanation"] = record.explanation
    return body


def render(entry: AuditEntry, account: ServiceAccount | None = None) -> dict[str, Any]:
    """The Cloud Audit Logs ``LogEntry`` of a stored entry (entries that earlier versions stored whole are
    returned as they are). ``account``, the service account the entry is about, adds Cloud Logging's monitored
    resource (``resource.labels.email_id``), so that a reader sees the email beside the unique id."""
    body = entry.body
    if "protoPayload" in body:
        return body
    authentication: dict[str, Any] = {"principalEmail": entry.principal}
    delegation = body.get("delegation")
    if delegation:
        authentication["serviceAccountDelegationInfo"] = [
            {"firstPartyPrincipal": {"principalEmail": email}} for email in delegation]
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": body.get("service", ""),
        "methodName": entry.method,
        "resourceName": entry.resource,
        "authenticationInfo": authentication,
        "requestMetadata": {"callerIp": body.get("callerIp", ""),
                            "callerSuppliedUserAgent": body.get("userAgent", "")},
        "authorizationInfo": [{"permission": permission, "resource": resource, "granted": granted}
                              for permission, resource, granted in body.get("authorization", ())],
        "request": body.get("request", {}),
    }
    if "response" in body:
        payload["response"] = body["response"]
    payload["status"] = body.get("status", {})
    if "explanation" in body:
        payload["metadata"] = {"explanation": denials.without_search(body["explanation"])}
    micros = int(entry.timestamp * 1_000_000)
    out: dict[str, Any] = {
        "insertId": entry.insert_id,
        "timestamp": format_timestamp(entry.timestamp).replace("Z", f".{micros % 1_000_000:06d}Z"),
        "severity": "ERROR" if entry.denied else "NOTICE",
        "logName": f"keyless/logs/cloudaudit.googleapis.com%2F{_log_kind(entry.method)}",
    }
    if account is not None:
        out["resource"] = {"type": "service_account", "labels": {
            "email_id": account.email, "project_id": account.project_id, "unique_id": account.unique_id}}
    out["protoPayload"] = payload
    return out


def account_of(resource: str) -> str | None:
    """The unique id of the service account an entry's resource name is (or is under), if it names one so."""
    match = _ACCOUNT_RESOURCE.match(resource)
    return match.group(1) if match else None


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
