"""Published public keys: Google's cert maps and JWKS, per-account key metadata, and OIDC discovery."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.crypto.keys import jwk_of_cert, public_key_pem
from keyless.errors import NotFound
from keyless.http.common import JSONResponse, base_url, keyless_of, via_google_host
from keyless.service.keyring import ISSUER
from keyless.storage.base import KeyRecord

# Short enough that a verifier sees a rotation soon, long enough to spare the server (Node honours max-age).
CACHE = {"Cache-Control": "public, max-age=300, must-revalidate, no-transform"}


async def _issuer_keys(request: Request) -> list[KeyRecord]:
    return await keyless_of(request).core.keyring.published_keys(ISSUER)


async def oauth2_v1_certs(request: Request) -> Response:
    return JSONResponse({k.key_id: k.certificate_pem.decode() for k in await _issuer_keys(request)}, headers=CACHE)


async def oauth2_v3_certs(request: Request) -> Response:
    keys = [jwk_of_cert(k.certificate_pem, k.key_id) for k in await _issuer_keys(request)]
    return JSONResponse({"keys": keys}, headers=CACHE)


async def _account_keys(request: Request) -> list[KeyRecord]:
    kl = keyless_of(request)
    email: str = request.path_params["email"]
    account = await kl.core.resolve_account(email)
    if account is None:
        raise NotFound(f"Not found; Gaia id not found for email {email}")
    return await kl.core.keyring.published_keys(account.unique_id)


async def account_x509(request: Request) -> Response:
    return JSONResponse({k.key_id: k.certificate_pem.decode() for k in await _account_keys(request)},
                        headers=CACHE)


async def account_jwk(request: Request) -> Response:
    keys = [jwk_of_cert(k.certificate_pem, k.key_id) for k in await _account_keys(request)]
    return JSONResponse({"keys": keys}, headers=CACHE)


async def account_raw(request: Request) -> Response:
    return JSONResponse({k.key_id: public_key_pem(k.certificate_pem).decode() for k in await _account_keys(request)},
                        headers=CACHE)


async def openid_configuration(request: Request) -> Response:
    kl = keyless_of(request)
    if via_google_host(request):
        oauth2, www = "https://oauth2.googleapis.com", "https://www.googleapis.com"
    else:
        oauth2 = www = base_url(request)
    return JSONResponse({
        "issuer": kl.settings.issuer,
        "authorization_endpoint": f"{oauth2}/o/oauth2/v2/auth",
        "token_endpoint": f"{oauth2}/token",
        "userinfo_endpoint": f"{oauth2}/v1/userinfo",
        "revocation_endpoint": f"{oauth2}/revoke",
        "jwks_uri": f"{www}/oauth2/v3/certs",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
        "grant_types_supported": ["refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
    }, headers=CACHE)
