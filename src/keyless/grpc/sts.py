"""``google.identity.sts.v1.SecurityTokenService`` over gRPC: ExchangeToken, over the same core as REST's
``POST /v1/token`` (``keyless.http.federation.sts_token``): the same exchange, failed-grant budget and audit entry.

**The message types.** Google publishes no ``.proto`` for ``google.identity.sts.v1`` (googleapis has none, no
package on PyPI ships its types; its only machine-readable definition is the REST discovery document
``sts.v1.json``, which has the fields' names and types but not their numbers). So keyless defines the messages
itself, at runtime, as a protobuf file descriptor built here (``descriptor_pb2``, in a descriptor pool of its own),
with no generated code and no ``.proto`` compiler: the discovery document's fields, numbered in the order of
Google's REST reference. A client built from these messages (``ExchangeTokenRequest``, ``ExchangeTokenResponse``
below) talks to keyless; whether Google's own service numbers them the same is not known, so no claim of wire
compatibility with Google's gRPC endpoint is made. IntrospectToken is not in the discovery document's v1 and is
served over REST only (``POST /v1/introspect``).

The exchange needs no credential (the subject token is one), so the call is not authenticated. Its refusals are
OAuth errors on REST; here each is a gRPC status (``OAUTH_STATUS``) with the description as its message and a
``google.rpc.ErrorInfo`` whose ``reason`` is the OAuth error code, in the ``grpc-status-details-bin`` trailer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from keyless.errors import KeylessError, OAuthError, Unavailable
from keyless.grpc.calls import audited, decode, encode, receive
from keyless.grpc.errors import grpc_status, status_code
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.audit import AuditRecord
from keyless.service.federation import EXCHANGE_METHOD, STS_SERVICE

PACKAGE = "google.identity.sts.v1"
SERVICE = f"{PACKAGE}.SecurityTokenService"
EXCHANGE_TOKEN = f"/{SERVICE}/ExchangeToken"

_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_INT32 = descriptor_pb2.FieldDescriptorProto.TYPE_INT32
# Field name, type and JSON name (REST's: camelCase in the request, snake_case in the response), numbered 1, 2, ...
_REQUEST_FIELDS = (("grant_type", _STRING, "grantType"), ("audience", _STRING, "audience"),
                   ("scope", _STRING, "scope"), ("requested_token_type", _STRING, "requestedTokenType"),
                   ("subject_token", _STRING, "subjectToken"), ("subject_token_type", _STRING, "subjectTokenType"),
                   ("actor_token", _STRING, "actorToken"), ("actor_token_type", _STRING, "actorTokenType"),
                   ("options", _STRING, "options"))
_RESPONSE_FIELDS = (("access_token", _STRING, "access_token"), ("issued_token_type", _STRING, "issued_token_type"),
                    ("token_type", _STRING, "token_type"), ("expires_in", _INT32, "expires_in"))


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="keyless/google/identity/sts/v1/sts.proto", package=PACKAGE,
                                              syntax="proto3")
    for name, fields in (("ExchangeTokenRequest", _REQUEST_FIELDS), ("ExchangeTokenResponse", _RESPONSE_FIELDS)):
        message = file.message_type.add(name=name)
        for number, (field, kind, json_name) in enumerate(fields, 1):
            message.field.add(name=field, number=number, type=kind, json_name=json_name,
                              label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    file.service.add(name="SecurityTokenService").method.add(
        name="ExchangeToken", input_type=f".{PACKAGE}.ExchangeTokenRequest",
        output_type=f".{PACKAGE}.ExchangeTokenResponse")
    return file


_POOL = descriptor_pool.DescriptorPool()  # keyless's own: never clashes with a package that defines these names
_POOL.Add(_file_descriptor())
ExchangeTokenRequest: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(
    f"{PACKAGE}.ExchangeTokenRequest"))
ExchangeTokenResponse: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(
    f"{PACKAGE}.ExchangeTokenResponse"))

# The gRPC status of each OAuth error of the exchange (REST answers them all 400): what a gRPC client tells apart.
OAUTH_STATUS = {
    "invalid_request": grpc.StatusCode.INVALID_ARGUMENT,
    "unsupported_grant_type": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_target": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_grant": grpc.StatusCode.UNAUTHENTICATED,  # the subject token does not authenticate anyone
    "unauthorized_client": grpc.StatusCode.PERMISSION_DENIED,  # the attribute condition refuses it
}


def error_status(error: KeylessError) -> grpc.Status:
    """The status a refusal is answered with: an OAuth error's mapped code, its description and an ErrorInfo
    naming the OAuth code; any other error as every gRPC method answers it."""
    if not isinstance(error, OAuthError):
        return grpc_status(error)
    code = OAUTH_STATUS.get(error.error) or status_code(error)
    status = status_pb2.Status(code=code.value[0], message=error.description)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=error.error, domain=STS_SERVICE))
    return rpc_status.to_status(status)


def _form(message: Any) -> dict[str, str]:
    """The request as REST's form carries it (the fields that are set)."""
    return {field: getattr(message, field) for field, _, _ in _REQUEST_FIELDS if getattr(message, field)}


def _exchange_handler(keyless: Keyless) -> grpc.RpcMethodHandler:
    """ExchangeToken: read the one message under ``--body-timeout`` (as ``keyless.grpc.calls.unary``), then do
    what REST's ``sts_token`` does, with no caller to authenticate."""
    deadline = keyless.limits.body_timeout

    async def handle(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        user_agent = next((value for key, value in context.invocation_metadata() or ()
                           if key == "user-agent" and isinstance(value, str)), "")
        try:
            raw = await receive(context, deadline)
        except KeylessError as exc:
            await context.abort_with_status(grpc_status(exc))

        async def work(record: AuditRecord) -> bytes:
            address = record.caller_ip
            try:
                keyless.oauth.admit(address)  # the failed-grant budget, before anything is read or audited
                audit.begin(EXCHANGE_METHOD, STS_SERVICE)
                granted = await keyless.federation.exchange(_form(decode(ExchangeTokenRequest, raw)))
            except Unavailable as exc:  # not the caller's fault: no budget spent
                raise exc.oauth() from None
            except KeylessError as exc:
                if record.method is not None:  # refused once admitted (not for the address's spent budget)
                    keyless.oauth.refused(address, exc)
                raise
            return encode(ExchangeTokenResponse(**granted))

        return await audited(keyless, context, EXCHANGE_TOKEN, user_agent, work, error_status)

    return grpc.stream_unary_rpc_method_handler(handle)


def handlers(keyless: Keyless) -> Iterable[grpc.GenericRpcHandler]:
    """The generic handler of the service over ``keyless``."""
    return [grpc.method_handlers_generic_handler(SERVICE, {"ExchangeToken": _exchange_handler(keyless)})]
