"""The credential verbs on ``/v1/projects/{project}/serviceAccounts/{account}:{verb}``: the IAM Credentials API's
``generateAccessToken``, ``generateIdToken``, ``signBlob`` and ``signJwt``, and IAM v1's deprecated
``signBlob``/``signJwt`` that share the path.

They are on every caller's hot path, so they are answered straight from the ASGI messages (no Starlette
``Request``/``Response``: about a fifth of keyless's own work per request, measured in process). Parsing,
authentication and rendering are the shared steps of ``keyless.http.common``, so the wire is the one the
other routes speak. IAM v1's variants are chosen when the request is addressed to ``iam.*``, names a real
project, or sends IAM v1's ``bytesToSign``.
"""

from __future__ import annotations

import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from keyless.domain import roles
from keyless.domain.delegation import parse_delegates
from keyless.domain.lifetimes import format_second, parse_bool, parse_duration
from keyless.domain.names import parse_account_name
from keyless.errors import InvalidArgument, KeylessError
from keyless.http.common import (
    parse_json_object,
    receive_body,
    send_json,
    unexpected,
)
from keyless.proxy.hosts import is_served
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.audit import AuditRecord
from keyless.service.authn import api_caller
from keyless.service.core import Caller
from keyless.service.requests import (
    GenerateAccessTokenRequest,
    GenerateIdTokenRequest,
    SignBlobRequest,
    SignJwtRequest,
)

CREDENTIALS = "iamcredentials.googleapis.com"
# Audit method name and the request fields each verb accepts.
VERBS = {
    "generateAccessToken": ("GenerateAccessToken", ("delegates", "scope", "lifetime")),
    "generateIdToken": ("GenerateIdToken",
                        ("delegates", "audience", "includeEmail", "useEmailAzp", "organizationNumberIncluded")),
    "signBlob": ("SignBlob", ("delegates", "payload", "bytesToSign")),
    "signJwt": ("SignJwt", ("delegates", "payload")),
}


class VerbHeaders(NamedTuple):
    """The request headers the verbs read, taken by the edge in its one pass over them (raw bytes)."""

    authorization: bytes | None
    host: bytes
    content_length: bytes | None
    user_project: bytes | None = None


Answer = Callable[[Keyless, Caller, str, dict[str, Any], bool], Awaitable[dict[str, Any]]]
"""Parse a verb's JSON into its typed request, call the core, render the result: (keyless, caller, the account's
name as the path gives it, the body, whether IAM v1's variant) -> the response body."""


class CredentialVerbs:
    """The ASGI handler of the four verbs, called by the edge for the route table's ``CredentialVerb`` entries."""

    def __init__(self, keyless: Keyless, universe_domains: tuple[str, ...] = ()) -> None:
        self.keyless = keyless
        self.universe_domains = universe_domains

    async def __call__(self, scope: Scope, receive: Receive, send: Send, project: str, account: str, verb: str,
                       record: AuditRecord, headers: VerbHeaders) -> None:
        name = f"projects/{project}/serviceAccounts/{account}"
        method, fields = VERBS[verb]
        # The verbs are always audited: the edge's record (this request's) is marked and filled here directly.
        record.method = method
        record.service = CREDENTIALS
        audited = record.request
        audited["name"] = name
        kl = self.keyless
        try:
            caller = await api_caller(
                kl.core, kl.per_caller,
                None if headers.authorization is None else headers.authorization.decode("latin-1"),
                None if headers.user_project is None else headers.user_project.decode("latin-1"))
            body = parse_json_object(await receive_body(
                receive, kl.limits.max_body_bytes,
                None if headers.content_length is None else headers.content_length.decode("latin-1")), fields)
            for field in audit.CREDENTIAL_REQUEST_FIELDS:
                if body.get(field) is not None:
                    audited[field] = body[field]
            legacy = project != "-" or (headers.host.startswith(b"iam.") and is_served(
                headers.host.decode("latin-1").split(":")[0], self.universe_domains))
            status, content = 200, await ANSWERS[verb](kl, caller, name, body, legacy)
            headers_out: Mapping[str, str] | None = None
        except KeylessError as exc:
            audit.note_error(exc.message)
            status, content, headers_out = exc.http_status, exc.to_json(), exc.headers
        except ClientDisconnect:
            return
        except Exception as exc:
            error = unexpected(scope["method"], scope["path"], exc)
            audit.note_error(error.message)
            status, content, headers_out = error.http_status, error.to_json(), None
        if record.method is not None:
            # The credential in this response is released only once its entry is stored.
            try:
                await kl.audit.commit(record, status)
            except KeylessError as exc:  # the entry cannot be stored (the database unavailable): nothing is released
                status, content, headers_out = exc.http_status, exc.to_json(), None
            except Exception as exc:  # likewise
                error = unexpected(scope["method"], scope["path"], exc)
                status, content, headers_out = error.http_status, error.to_json(), None
            finally:
                record.method = None
        await send_json(send, status, content, headers_out)


async def _generate_access_token(kl: Keyless, caller: Caller, name: str, body: dict[str, Any],
                                 iam_v1: bool) -> dict[str, Any]:
    account = parse_account_name(name, require_wildcard=True)
    # A repeated string field: a list of strings (a string, even space-separated, is refused, as Google does).
    scopes = body.get("scope") or []
    if type(scopes) is not list:
        raise InvalidArgument("Invalid value at 'scope': expected a list of strings.", field="scope")
    for item in scopes:
        if type(item) is not str:
            raise InvalidArgument("Invalid value at 'scope': expected a list of strings.", field="scope")
    delegates = parse_delegates(body.get("delegates"), max_delegates=None)  # how many: the core's rule
    lifetime = body.get("lifetime")
    request = GenerateAccessTokenRequest(
        account, tuple(scopes), delegates,
        None if lifetime is None or lifetime == "" else parse_duration(lifetime, field="lifetime"))
    result = await kl.credentials.generate_access_token(caller, request)
    return {"accessToken": result.token, "expireTime": format_second(result.expire_time)}


async def _generate_id_token(kl: Keyless, caller: Caller, name: str, body: dict[str, Any],
                             iam_v1: bool) -> dict[str, Any]:
    account = parse_account_name(name, require_wildcard=True)
    delegates = parse_delegates(body.get("delegates"), max_delegates=None)  # how many: the core's rule
    audience = body.get("audience")
    if not isinstance(audience, str):
        raise InvalidArgument("Invalid value for audience: the audience must be a non-empty string.",
                              field="audience")
    request = GenerateIdTokenRequest(
        account, audience, delegates,
        include_email=parse_bool(body.get("includeEmail"), field="includeEmail"),
        use_email_azp=parse_bool(body.get("useEmailAzp"), field="useEmailAzp"),
        organization_number_included=parse_bool(body.get("organizationNumberIncluded"),
                                                field="organizationNumberIncluded"))
    return {"token": (await kl.credentials.generate_id_token(caller, request)).token}


async def _sign_blob(kl: Keyless, caller: Caller, name: str, body: dict[str, Any], iam_v1: bool) -> dict[str, Any]:
    # IAM v1's signBlob names its payload bytesToSign and its answer's signature "signature".
    iam_v1 = iam_v1 or "bytesToSign" in body
    field = "bytesToSign" if iam_v1 else "payload"
    account = parse_account_name(name, require_wildcard=not iam_v1)
    if account.project != "-":  # IAM v1 answers 404 for a project or account not there before reading the body
        await kl.credentials.require_named_project(caller, account, roles.PERM_SIGN_BLOB, before_validation=True)
    delegates = parse_delegates(body.get("delegates"), max_delegates=None)  # how many: the core's rule
    request = SignBlobRequest(account, decode_bytes(body.get(field), field=field), delegates, iam_v1)
    result = await kl.credentials.sign_blob(caller, request)
    signature = binascii.b2a_base64(result.signature, newline=False).decode()
    return {"keyId": result.key_id, "signature" if iam_v1 else "signedBlob": signature}


async def _sign_jwt(kl: Keyless, caller: Caller, name: str, body: dict[str, Any], iam_v1: bool) -> dict[str, Any]:
    account = parse_account_name(name, require_wildcard=not iam_v1)
    if account.project != "-":
        await kl.credentials.require_named_project(caller, account, roles.PERM_SIGN_JWT, before_validation=True)
    delegates = parse_delegates(body.get("delegates"), max_delegates=None)  # how many: the core's rule
    payload = body.get("payload")
    if not isinstance(payload, str):
        raise InvalidArgument("The payload must be a JSON object serialized as a string.", field="payload")
    request = SignJwtRequest(account, payload, delegates, iam_v1)
    result = await kl.credentials.sign_jwt(caller, request)
    return {"keyId": result.key_id, "signedJwt": result.jwt}


def decode_bytes(value: object, *, field: str) -> bytes:
    """proto3 JSON bytes: standard or URL-safe base64, padded or not."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} is required and must be a base64 string.", field=field)
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        # base64.b64decode(..., validate=True) without its Python wrapper (this runs on every signBlob).
        return binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"Invalid value at '{field}' (TYPE_BYTES): not valid base64.", field=field) from None


ANSWERS: dict[str, Answer] = {
    "generateAccessToken": _generate_access_token,
    "generateIdToken": _generate_id_token,
    "signBlob": _sign_blob,
    "signJwt": _sign_jwt,
}
