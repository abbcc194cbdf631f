"""``google.iam.credentials.v1.IAMCredentials`` over gRPC: GenerateAccessToken, GenerateIdToken, SignBlob, SignJwt.

The messages are the ones google-cloud-iam ships (``google.cloud.iam_credentials_v1.types``, proto-plus wrappers
whose ``.pb()`` is the protobuf class). Each method parses its message into the typed request of the core
(``keyless.service.requests``), calls the same core as REST's verbs (``keyless.http.credentials``), and renders
the typed result; its audit entry has REST's method name and service and records the same request fields."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import grpc
from google.cloud.iam_credentials_v1 import types

from keyless.domain.delegation import parse_delegates
from keyless.domain.names import parse_account_name
from keyless.errors import InvalidArgument
from keyless.grpc.calls import Answer, decode, encode, unary
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.core import Caller
from keyless.service.requests import (
    GenerateAccessTokenRequest,
    GenerateIdTokenRequest,
    SignBlobRequest,
    SignJwtRequest,
)

SERVICE = "google.iam.credentials.v1.IAMCredentials"
CREDENTIALS = "iamcredentials.googleapis.com"  # the audited service, as REST's entries name it

_GenerateAccessTokenRequest = types.GenerateAccessTokenRequest.pb()
_GenerateAccessTokenResponse = types.GenerateAccessTokenResponse.pb()
_GenerateIdTokenRequest = types.GenerateIdTokenRequest.pb()
_GenerateIdTokenResponse = types.GenerateIdTokenResponse.pb()
_SignBlobRequest = types.SignBlobRequest.pb()
_SignBlobResponse = types.SignBlobResponse.pb()
_SignJwtRequest = types.SignJwtRequest.pb()
_SignJwtResponse = types.SignJwtResponse.pb()


def request_fields(message: Any) -> dict[str, Any]:
    """The request's name and the fields REST's entries record, named and written as proto3 JSON (REST's body) has
    them: a field at its default value is left out, a lifetime is its JSON string ("600s"). Read off the message
    directly (``json_format.MessageToDict`` per call was a tenth of keyless's own time on a call); a lifetime that
    is no valid Duration is left out (``_lifetime`` refuses it)."""
    fields: dict[str, Any] = {"name": message.name}
    known = message.DESCRIPTOR.fields_by_name
    if "scope" in known and message.scope:
        fields["scope"] = list(message.scope)
    if "lifetime" in known and message.HasField("lifetime"):
        with contextlib.suppress(ValueError):
            fields["lifetime"] = message.lifetime.ToJsonString()
    if message.delegates:
        fields["delegates"] = list(message.delegates)
    if "audience" in known and message.audience:
        fields["audience"] = message.audience
    if "include_email" in known and message.include_email:
        fields["includeEmail"] = True
    return fields


def _note(message: Any) -> None:
    """Record the request's fields in its audit entry."""
    audit.note_request(**request_fields(message))


def _lifetime(message: Any) -> float | None:
    """The requested lifetime in seconds (None: not given); a Duration out of protobuf's range (beyond 10,000 years,
    seconds and nanos of opposite signs, nanos of a whole second) is the caller's error, as REST's bad string is."""
    if not message.HasField("lifetime"):
        return None
    try:
        message.lifetime.ToJsonString()  # protobuf's own validity check of a Duration
    except ValueError as exc:
        raise InvalidArgument(f"Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration): {exc}",
                              field="lifetime") from None
    return float(message.lifetime.seconds + message.lifetime.nanos / 1e9)


def _account_and_delegates(message: Any) -> tuple[Any, tuple[Any, ...]]:
    account = parse_account_name(message.name, require_wildcard=True)
    delegates = parse_delegates(list(message.delegates), max_delegates=None)  # how many: the core's rule
    return account, delegates


async def _generate_access_token(kl: Keyless, caller: Caller, raw: bytes) -> bytes:
    message = decode(_GenerateAccessTokenRequest, raw)
    _note(message)
    account, delegates = _account_and_delegates(message)
    lifetime = _lifetime(message)
    result = await kl.credentials.generate_access_token(
        caller, GenerateAccessTokenRequest(account, tuple(message.scope), delegates, lifetime))
    response = _GenerateAccessTokenResponse(access_token=result.token)
    response.expire_time.seconds = result.expire_time
    return encode(response)


async def _generate_id_token(kl: Keyless, caller: Caller, raw: bytes) -> bytes:
    message = decode(_GenerateIdTokenRequest, raw)
    _note(message)
    account, delegates = _account_and_delegates(message)
    if not message.audience:
        raise InvalidArgument("Invalid value for audience: the audience must be a non-empty string.",
                              field="audience")
    result = await kl.credentials.generate_id_token(
        caller, GenerateIdTokenRequest(account, message.audience, delegates, include_email=message.include_email))
    return encode(_GenerateIdTokenResponse(token=result.token))


async def _sign_blob(kl: Keyless, caller: Caller, raw: bytes) -> bytes:
    message = decode(_SignBlobRequest, raw)
    _note(message)
    account, delegates = _account_and_delegates(message)
    result = await kl.credentials.sign_blob(caller, SignBlobRequest(account, message.payload, delegates))
    return encode(_SignBlobResponse(key_id=result.key_id, signed_blob=result.signature))


async def _sign_jwt(kl: Keyless, caller: Caller, raw: bytes) -> bytes:
    message = decode(_SignJwtRequest, raw)
    _note(message)
    account, delegates = _account_and_delegates(message)
    result = await kl.credentials.sign_jwt(caller, SignJwtRequest(account, message.payload, delegates))
    return encode(_SignJwtResponse(key_id=result.key_id, signed_jwt=result.jwt))


# gRPC method -> (the audit entry's method name, the answer).
METHODS: dict[str, tuple[str, Answer]] = {
    "GenerateAccessToken": ("GenerateAccessToken", _generate_access_token),
    "GenerateIdToken": ("GenerateIdToken", _generate_id_token),
    "SignBlob": ("SignBlob", _sign_blob),
    "SignJwt": ("SignJwt", _sign_jwt),
}


def handlers(keyless: Keyless) -> Iterable[grpc.GenericRpcHandler]:
    """The generic handler of the service, every method over ``keyless``."""
    return [grpc.method_handlers_generic_handler(SERVICE, {
        name: unary(keyless, f"/{SERVICE}/{name}", audited, CREDENTIALS, answer)
        for name, (audited, answer) in METHODS.items()})]
