"""OAuth 2.0 routes: ``/token`` (and Google's other token URLs), tokeninfo and revoke, in the OAuth error shape.

Each reads the query or the form into the core's typed request (``keyless.service.oauth_requests``: ``TokenRequest``,
``TokenInfoRequest``, ``RevokeRequest``) and renders what it gets back: the token response of a ``TokenGrant``,
tokeninfo's JSON of an ``AccessTokenInfo`` or an ``IdTokenInfo``."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import KeylessError, OAuthError, Unavailable
from keyless.http.common import JSONResponse, keyless_of, read_form
from keyless.service import audit
from keyless.service.oauth_requests import (
    AccessTokenInfo,
    IdTokenInfo,
    RevokeRequest,
    TokenGrant,
    TokenInfoRequest,
    TokenRequest,
)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Where these endpoints are served (keyless.http.app's routes): errors there have the OAuth shape.
OAUTH_PATHS = frozenset({"/token", "/oauth2/v4/token", "/o/oauth2/token", "/tokeninfo", "/oauth2/v1/tokeninfo",
                         "/oauth2/v3/tokeninfo", "/revoke", "/o/oauth2/revoke",
                         "/v1/token", "/v1/introspect"})  # the STS (keyless.http.federation)


def with_basic_client(form: dict[str, str], authorization: str | None) -> dict[str, str]:
    """The form, with the client's credentials from ``Authorization: Basic`` when the body has none (RFC 6749
    §2.3.1: client_secret_basic, each part form-urlencoded)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or "client_id" in form:
        return form
    try:
        client_id, sep, client_secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        raise OAuthError("invalid_client", "Malformed Basic client authentication.", http_status=401) from None
    if not sep:
        raise OAuthError("invalid_client", "Malformed Basic client authentication.", http_status=401)
    return {**form, "client_id": unquote_plus(client_id), "client_secret": unquote_plus(client_secret)}


async def token(request: Request) -> Response:
    oauth = keyless_of(request).oauth
    # The TCP peer's address: a header such as X-Forwarded-For is the caller's to write.
    client_address = request.client.host if request.client else ""
    oauth.admit(client_address)  # before the request is read or audited
    audit.begin("oauth2.Token", "oauth2.googleapis.com")
    try:
        form = with_basic_client(await read_form(request), request.headers.get("authorization"))
        audit.note_request(grant_type=form.get("grant_type"))
        granted = await oauth.token(TokenRequest(
            form.get("grant_type"), form.get("assertion"), form.get("refresh_token"), form.get("code"),
            form.get("redirect_uri"), form.get("code_verifier"), form.get("client_id"), form.get("client_secret"),
            form.get("scope", "")))
    except Unavailable as exc:  # the database's failure, not the client's: no failed grant is charged
        raise exc.oauth() from None
    except KeylessError as exc:
        oauth.refused(client_address, exc)
        raise
    return JSONResponse(token_response(granted), headers=NO_STORE)


def token_response(granted: TokenGrant) -> dict[str, Any]:
    """OAuth's token response (RFC 6749 §5.1), its members in the order Google's endpoint writes them."""
    if not granted.access_token:
        return {"id_token": granted.id_token}
    out: dict[str, Any] = {}
    if granted.refresh_token is not None:
        out["refresh_token"] = granted.refresh_token
    out["access_token"] = granted.access_token
    out["expires_in"] = granted.expires_in
    if granted.scope is not None:
        out["scope"] = granted.scope
    out["token_type"] = "Bearer"
    if granted.id_token is not None:
        out["id_token"] = granted.id_token
    return out


async def tokeninfo(request: Request) -> Response:
    """``GET``: the token in the query string (or the ``Authorization`` header)."""
    return await _tokeninfo(request, dict(request.query_params))


async def tokeninfo_form(request: Request) -> Response:
    """``POST``: the token in the form (or the ``Authorization`` header)."""
    return await _tokeninfo(request, await read_form(request))


async def _tokeninfo(request: Request, form: dict[str, str]) -> Response:
    access_token = form.get("access_token")
    id_token = form.get("id_token")
    authorization = request.headers.get("authorization", "")
    if not access_token and not id_token and authorization.lower().startswith("bearer "):
        access_token = authorization[7:].strip()
    try:
        info = await keyless_of(request).oauth.tokeninfo(TokenInfoRequest(access_token, id_token))
    except Unavailable as exc:
        raise exc.oauth() from None
    return JSONResponse(tokeninfo_response(info))


def tokeninfo_response(info: AccessTokenInfo | IdTokenInfo) -> dict[str, Any]:
    """tokeninfo's JSON as Google's endpoint writes it: every value a string (numbers and booleans too)."""
    if isinstance(info, IdTokenInfo):
        out = {k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v)
               for k, v in info.claims.items()}
        out["alg"] = "RS256"
        out["kid"] = info.key_id
        out["typ"] = "JWT"
        return out
    if info.email is None:  # a workload identity pool's subject
        return {"sub": info.subject, "scope": " ".join(info.scopes), "exp": str(info.expires_at),
                "expires_in": str(info.expires_in), "access_type": "online"}
    return {
        "azp": info.audience,
        "aud": info.audience,
        "sub": info.subject,
        "scope": " ".join(info.scopes),
        "exp": str(info.expires_at),
        "expires_in": str(info.expires_in),
        "email": info.email,
        "email_verified": "true",
        "access_type": "online",
    }


async def revoke(request: Request) -> Response:
    """``GET``: the token in the query string."""
    audit.begin("oauth2.Revoke", "oauth2.googleapis.com")
    return await _revoke(request, dict(request.query_params))


async def revoke_form(request: Request) -> Response:
    """``POST``: the token in the form."""
    audit.begin("oauth2.Revoke", "oauth2.googleapis.com")
    return await _revoke(request, await read_form(request))


async def _revoke(request: Request, form: dict[str, str]) -> Response:
    try:
        await keyless_of(request).oauth.revoke(RevokeRequest(form.get("token")))
    except Unavailable as exc:
        raise exc.oauth() from None
    return JSONResponse({})
