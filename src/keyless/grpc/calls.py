"""One unary gRPC method over the core: the request's audit record and read-cache scope (as the REST edge opens
them), the caller from the ``authorization`` metadata (the same tokens as REST's header), the method's own answer,
the audit entry committed before the answer is released, and every error answered as a gRPC status.

Messages travel as bytes: each method parses its request itself, so a message that is not protobuf is an
``INVALID_ARGUMENT`` of the method (audited like any refusal) rather than grpcio's own deserialisation failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from keyless.errors import InvalidArgument, KeylessError
from keyless.grpc.errors import grpc_status, unexpected
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.authn import api_caller
from keyless.service.core import Caller
from keyless.storage.cache import enter_request, leave_request

Answer = Callable[[Keyless, Caller, bytes], Awaitable[bytes]]
"""A method's own part: (keyless, the authenticated caller, the request's bytes) -> the response's bytes."""

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


def peer_address(peer: str) -> str:
    """The caller's address of a gRPC peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``), as the audit log keeps it."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:rest.find("]")] if "]" in rest else rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return ""


def unary(keyless: Keyless, full_method: str, audit_method: str, service: str,
          answer: Answer) -> grpc.RpcMethodHandler:
    """The handler of a unary method audited as ``audit_method`` of ``service`` (the names REST's entries use)."""

    async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        authorization: str | None = None
        user_project: str | None = None
        user_agent = ""
        for key, value in context.invocation_metadata() or ():
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
        record, token = audit.open_record(peer_address(context.peer() or ""), user_agent[:MAX_USER_AGENT])
        scoped = enter_request()  # cached store reads check the state generation once per request
        response = b""
        error: KeylessError | None = None
        try:
            audit.begin(audit_method, service)
            try:
                caller = await api_caller(keyless.core, keyless.per_caller, authorization, user_project)
                response = await answer(keyless, caller, request)
            except KeylessError as exc:
                error = exc
            except Exception as exc:
                error = unexpected(full_method, exc)
            if error is not None:
                audit.note_error(error.message)
            # The credential in this answer is released only once its entry is stored.
            try:
                await keyless.audit.commit(record, 200 if error is None else error.http_status)
            except KeylessError as exc:  # the entry cannot be stored (the database unavailable): nothing released
                error = exc
            except Exception as exc:  # likewise
                error = unexpected(full_method, exc)
            finally:
                record.method = None
        finally:
            leave_request(scoped)
            audit.close_record(token)
        if error is not None:
            await context.abort_with_status(grpc_status(error))
        return response

    return grpc.unary_unary_rpc_method_handler(handle)
