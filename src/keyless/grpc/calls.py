"""One unary gRPC method over the core: the request's audit record and read-cache scope (as the REST edge opens
them), the caller from the ``authorization`` metadata (the same tokens as REST's header), the method's own answer,
the audit entry committed before the answer is released, and every error answered as a gRPC status.

Messages travel as bytes: the method parses its request itself (``unary`` with ``request_type``, or the answer), so
a message that is not protobuf is an ``INVALID_ARGUMENT`` of the method (audited like any refusal) rather than
grpcio's own deserialisation failure.

The request is read under a deadline (``--body-timeout``, REST's limit for a request's body once its head is in):
grpcio waits for a unary method's message without one, so a client that opens calls and never finishes sending
them would hold its concurrent-call slots (``--max-connections``) forever and every other call would be refused.
So every method is registered as grpcio's stream-unary kind (the same on the wire: a unary client sends one message)
and reads its one message itself; a message that is late ends the call with ``DEADLINE_EXCEEDED``, before anything
is decided or audited (REST closes such a connection before the request reaches the application).

A method is audited when REST's route is (the IAM Credentials verbs, every change); reads are not, as on REST. A
method given its ``request_type`` has its message parsed before the caller is authenticated, so that its entry
records the request's fields (``audit_fields``: the name REST's route takes from its path) whoever calls; a message
that does not parse is still answered after authentication, so an unauthenticated call is ``UNAUTHENTICATED``
whatever it sent, as on REST."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from keyless.errors import DeadlineExceeded, InvalidArgument, KeylessError, ResourceExhausted, Unimplemented
from keyless.grpc.errors import grpc_status, unexpected
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.audit import AuditRecord
from keyless.service.authn import api_caller
from keyless.service.core import Caller
from keyless.storage.cache import current_request

Answer = Callable[[Keyless, Caller, Any], Awaitable[bytes]]
"""A method's own part: (keyless, the authenticated caller, the request: its bytes, or its message when ``unary``
parsed it) -> the response's bytes."""
AuditFields = Callable[[Any], Mapping[str, Any]]
"""The request fields an audited method's entry records, from its message (those REST's ``audit.begin`` names)."""

MAX_USER_AGENT = 256


def decode(cls: Any, raw: bytes) -> Any:
    """The request message of ``raw``: bytes that do not parse as it are the caller's error. Unknown fields are
    kept aside and ignored, as proto3 readers (and Google's servers) do."""
    message = cls()
    try:
        message.ParseFromString(raw)
    except (DecodeError, ValueError):
        raise InvalidArgument(f"Invalid {cls.DESCRIPTOR.full_name}: the request is not a valid protobuf "
                              "message of that type.") from None
    return message


def encode(message: Message) -> bytes:
    return bytes(message.SerializeToString())


def as_json(message: Message) -> dict[str, Any]:
    """A request message as REST's body carries it (proto3 JSON: camelCase names, bytes in base64, enums by name,
    default values left out), for the core operations that take the body as a mapping."""
    body: dict[str, Any] = json_format.MessageToDict(message)
    return body


def from_json(cls: Any, body: Mapping[str, Any]) -> bytes:
    """The encoded ``cls`` message of what REST answers as JSON (``body``): the same answer on both wires."""
    return encode(json_format.ParseDict(body, cls()))


def peer_address(peer: str) -> str:
    """The caller's address of a gRPC peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``), as the audit log keeps it."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:rest.find("]")] if "]" in rest else rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return ""


async def receive(context: grpc.aio.ServicerContext[Any, Any], deadline: float) -> bytes:
    """The call's one request message, which must arrive within ``deadline`` seconds."""
    try:
        async with asyncio.timeout(deadline):
            message = await context.read()
    except TimeoutError:
        raise DeadlineExceeded(f"The request message was not received within {deadline:g} seconds.") from None
    if message is grpc.aio.EOF:
        raise InvalidArgument("The call ended without a request message.")
    return bytes(message)


def unary(keyless: Keyless, full_method: str, audit_method: str | None, service: str, answer: Answer, *,
          request_type: Any = None, audit_fields: AuditFields | None = None) -> grpc.RpcMethodHandler:
    """The handler of a unary method audited as ``audit_method`` of ``service`` (the names REST's entries use; None:
    a read, not audited). With ``request_type`` (a protobuf class) the answer receives the parsed message, else
    the bytes."""

    deadline = keyless.limits.body_timeout
    max_metadata = keyless.limits.max_header_bytes

    async def handle(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        authorization: str | None = None
        user_project: str | None = None
        user_agent = ""
        metadata_size = 0
        for key, value in context.invocation_metadata() or ():
            metadata_size += len(key) + len(value) + 32  # HTTP/2's size of a header field
            if not isinstance(value, str):
                continue  # binary (-bin) metadata: none that keyless reads
            if key == "authorization":
                if authorization is None:  # the first of repeated entries counts, as for REST's headers
                    authorization = value
            elif key == "x-goog-user-project":
                if user_project is None:
                    user_project = value
            elif key == "user-agent" and not user_agent:
                user_agent = value
        try:
            if metadata_size > max_metadata:
                # grpcio holds the metadata to --max-header-bytes only once the client has acknowledged the
                # server's HTTP/2 settings; a client that sends its call before that is held to it here.
                raise ResourceExhausted(f"The request's metadata is larger than {max_metadata} bytes.")
            request = await receive(context, deadline)
        except KeylessError as exc:
            await context.abort_with_status(grpc_status(exc))

        async def work(record: AuditRecord) -> bytes:
            if audit_method is not None:
                audit.begin(audit_method, service)
            message: Any = request
            malformed: KeylessError | None = None
            if request_type is not None:
                try:
                    message = decode(request_type, request)
                except KeylessError as exc:
                    malformed = exc
                else:
                    if audit_method is not None and audit_fields is not None:
                        audit.begin(audit_method, service, **audit_fields(message))
            caller = await api_caller(keyless.core, keyless.per_caller, authorization, user_project)
            if malformed is not None:
                raise malformed
            return await answer(keyless, caller, message)

        return await audited(keyless, context, full_method, user_agent, work)

    return grpc.stream_unary_rpc_method_handler(handle)


async def audited(keyless: Keyless, context: grpc.aio.ServicerContext[Any, Any], full_method: str, user_agent: str,
                  work: Callable[[AuditRecord], Awaitable[bytes]],
                  status_of: Callable[[KeylessError], grpc.Status] = grpc_status) -> bytes:
    """Run a call's ``work`` in the request's one scope, its audit record (on which cached store reads check the
    state generation once), then commit the entry if the work marked the request audited (``audit.begin``) before
    the answer is released, and answer any error as a gRPC status (``status_of``)."""
    record = AuditRecord(peer_address(context.peer() or ""), user_agent[:MAX_USER_AGENT])
    scoped = current_request.set(record)
    response = b""
    error: KeylessError | None = None
    try:
        try:
            response = await work(record)
        except KeylessError as exc:
            error = exc
        except Exception as exc:
            error = unexpected(full_method, exc)
        if error is not None:
            audit.note_error(error.message)
        # The credential in this answer is released only once its entry is stored.
        try:
            if record.method is not None:
                await keyless.audit.commit(record, 200 if error is None else error.http_status)
        except KeylessError as exc:  # the entry cannot be stored (the database unavailable): nothing released
            error = exc
        except Exception as exc:  # likewise
            error = unexpected(full_method, exc)
        finally:
            record.method = None
    finally:
        current_request.reset(scoped)
    if error is not None:
        await context.abort_with_status(status_of(error))
    return response


def not_served(full_method: str) -> grpc.RpcMethodHandler:
    """The handler of a method of a served service that keyless does not serve: ``UNIMPLEMENTED`` saying so, before
    anything is read (nothing is decided, so nothing is audited; a client that never sends its message is answered
    all the same)."""
    error = Unimplemented(f"keyless does not serve {full_method.lstrip('/')}.")

    async def handle(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await context.abort_with_status(grpc_status(error))
        return b""

    return grpc.stream_unary_rpc_method_handler(handle)


@dataclass(frozen=True, slots=True)
class Method:
    """One served method answered from its parsed message, and its audit entry as REST's route makes it
    (``audited``: the method name, None for a read, which REST does not audit; ``fields``: the request fields its
    entry records)."""

    request: Any
    answer: Answer
    audited: str | None = None
    fields: AuditFields | None = None


def service_handler(keyless: Keyless, service: str, audited_service: str, methods: Mapping[str, Method],
                    not_served_methods: tuple[str, ...]) -> grpc.GenericRpcHandler:
    """The generic handler of ``service``: its ``methods`` over ``keyless`` (audited under ``audited_service``, the
    service REST's entries name), and its other methods answering UNIMPLEMENTED."""
    handlers = {name: unary(keyless, f"/{service}/{name}", method.audited, audited_service, method.answer,
                            request_type=method.request, audit_fields=method.fields)
                for name, method in methods.items()}
    handlers.update({name: not_served(f"/{service}/{name}") for name in not_served_methods})
    return grpc.method_handlers_generic_handler(service, handlers)
