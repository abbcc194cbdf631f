"""Request parsing, authentication and rendering shared by every route.

Each step has a form that works on raw ASGI messages (``receive_body``, ``parse_json_object``, ``send_json``;
the caller comes from ``keyless.service.authn.api_caller``) for the routes that skip Starlette's objects, and
the ``Request``/``Response`` form the other routes use is built on it, so both say the same thing on the wire."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Send

from keyless.errors import Internal, InvalidArgument, KeylessError, OAuthError, PayloadTooLarge
from keyless.http.routing import API_SCOPE_KEY
from keyless.proxy.hosts import is_served
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.authn import api_caller as api_caller_of
from keyless.service.core import Caller
from keyless.service.usage import require_service

log = logging.getLogger("keyless.http")
_JSON_TYPE = b"application/json; charset=UTF-8"


class JSONResponse(Response):
    media_type = _JSON_TYPE.decode()

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def keyless_of(request: Request) -> Keyless:
    app: Keyless = request.app.state.keyless
    return app


async def receive_body(receive: Receive, limit: int, declared_length: str | None) -> bytes:
    """The request body from ASGI messages; over ``limit`` bytes (declared or sent so far) is refused."""
    # ASCII digits only: the header is decoded as latin-1, where "²" is a digit to str.isdigit() but not to int().
    if (declared_length is not None and declared_length.isascii() and declared_length.isdigit()
            and (len(declared_length) > 18 or int(declared_length) > limit)):
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


async def read_body(request: Request) -> bytes:
    return await receive_body(request.receive, keyless_of(request).limits.max_body_bytes,
                              request.headers.get("content-length"))


def parse_json_object(raw: bytes, allowed: Collection[str] | None = None) -> dict[str, Any]:
    """The JSON object of a body ({} when empty); unknown top-level fields are refused as Google does."""
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"Invalid JSON payload received. {exc.args[0] if exc.args else ''}".strip()) from None
    if not isinstance(body, dict):
        raise InvalidArgument("Invalid JSON payload received. Expected an object at the top level.")
    if allowed is not None:
        for name in body:
            if name not in allowed:
                raise InvalidArgument(f"Invalid JSON payload received. Unknown name \"{name}\": Cannot find field.",
                                      field=name)
    return body


async def read_json(request: Request, allowed: Collection[str] | None = None) -> dict[str, Any]:
    return parse_json_object(await read_body(request), allowed)


async def read_form(request: Request) -> dict[str, str]:
    """``application/x-www-form-urlencoded`` body merged over the query string (body wins)."""
    raw = await read_body(request)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "The request body is not valid UTF-8.") from None
    form = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if text and "json" in content_type:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise OAuthError("invalid_request", "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise OAuthError("invalid_request", "The request body must be a JSON object.")
        form.update({k: v for k, v in data.items() if isinstance(v, str)})
    elif text:
        try:
            form.update(parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=100))
        except ValueError:
            raise OAuthError("invalid_request", "The request body is not a valid form.") from None
    return form


async def api_caller(request: Request) -> Caller:
    kl = keyless_of(request)
    caller = await api_caller_of(kl.core, kl.per_caller, request.headers.get("authorization"),
                                 request.headers.get("x-goog-user-project"))
    if kl.settings.enforce_services:
        # The API of the route (its table entry's ``api``) and the project its path names. Service Usage, keyless's
        # own routes and the IAM Credentials verbs (checked once the target is authorized) name none.
        api = request.scope.get(API_SCOPE_KEY)
        if api is not None:
            await require_service(kl.core, caller, api, request.path_params.get("project"))
    return caller


async def send_json(send: Send, status: int, content: Any, headers: Mapping[str, str] | None = None) -> None:
    """A whole JSON response as two ASGI messages, with the headers ``JSONResponse`` sends (and ``headers``)."""
    body = orjson.dumps(content)
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON_TYPE)]
    if headers:
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


_LOGGED = "_keyless_logged"


def unexpected(method: str, path: str, exc: Exception) -> Internal:
    """Any exception no handler claims: never a traceback on the wire; the log names the exception type only
    (its text may hold secrets)."""
    if not getattr(exc, _LOGGED, False):  # Starlette's handler and then the edge see the same exception: once
        log.error("internal error on %s %s: %s", method, path, type(exc).__name__)
        with contextlib.suppress(AttributeError):  # an exception type with __slots__ cannot carry the mark
            setattr(exc, _LOGGED, True)
    return Internal("Internal error encountered.")


def error_response(exc: KeylessError) -> JSONResponse:
    """Any error of the tree, in its own wire shape (Google's, or OAuth's for ``OAuthError``)."""
    audit.note_error(exc.message)
    return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=exc.headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def via_google_host(request: Request) -> bool:
    """True when the client addressed a Google host (through the proxy or a universe domain)."""
    return is_served(request.headers.get("host", "").split(":")[0], request.app.state.universe_domains)
