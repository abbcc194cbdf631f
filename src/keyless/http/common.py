"""Request parsing, authentication and rendering shared by every route."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import InvalidArgument, KeylessError, OAuthError, PayloadTooLarge
from keyless.proxy.hosts import is_served
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.authn import authenticate, require_api_scope
from keyless.service.core import Caller


class JSONResponse(Response):
    media_type = "application/json; charset=UTF-8"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def keyless_of(request: Request) -> Keyless:
    app: Keyless = request.app.state.keyless
    return app


async def read_body(request: Request) -> bytes:
    limit = keyless_of(request).limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON object of the body ({} when empty); unknown top-level fields are refused as Google does."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"Invalid JSON payload received. {exc.args[0] if exc.args else ''}".strip()) from None
    if not isinstance(body, dict):
        raise InvalidArgument("Invalid JSON payload received. Expected an object at the top level.")
    if allowed is not None:
        known = set(allowed)
        for name in body:
            if name not in known:
                raise InvalidArgument(f"Invalid JSON payload received. Unknown name \"{name}\": Cannot find field.",
                                      field=name)
    return body


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
    caller = await authenticate(kl.core, request.headers.get("authorization"))
    audit.note(principal=caller.email)
    kl.per_caller.check(caller.email)
    require_api_scope(caller)
    return caller


def error_response(exc: KeylessError) -> JSONResponse:
    audit.note_error(exc.message)
    return JSONResponse(exc.to_json(), status_code=exc.http_status)


def oauth_error_response(exc: OAuthError) -> JSONResponse:
    audit.note_error(f"{exc.error}: {exc.description}")
    return JSONResponse(exc.to_json(), status_code=exc.http_status)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def via_google_host(request: Request) -> bool:
    """True when the client addressed a Google host (through the proxy or a universe domain)."""
    return is_served(request.headers.get("host", "").split(":")[0], request.app.state.universe_domains)
