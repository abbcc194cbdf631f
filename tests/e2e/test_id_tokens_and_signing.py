"""generateIdToken, signBlob and signJwt over HTTP, checked the way relying parties check them.

ID tokens are verified with google-auth's ``id_token.verify_token`` against the server's PEM cert map
(``/oauth2/v1/certs``) and JWKS (``/oauth2/v3/certs``), and with PyJWT's JWKS client. Signatures are verified
with ``cryptography`` using the public keys published at ``/service_accounts/v1/metadata/x509/{email}``.
(google-auth's ``impersonated_credentials.IDTokenCredentials`` hard-codes the iamcredentials host, so the
generateIdToken call itself is made with ``requests``.)
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from google.auth.transport.requests import Request
from google.oauth2 import id_token, service_account

from tests.conftest import Server
from tests.e2e.support import (
    TOKEN_CREATOR,
    google_error,
    iamcredentials,
    jwt_claims,
    jwt_header,
    sa_token,
    server_now,
    unique_id,
)

GOOGLE_ISSUER = "https://accounts.google.com"


@pytest.fixture
def pair(server: Server, tmp_path: Path) -> tuple[str, str, str]:
    """(caller token, caller email, target email) with the caller holding Token Creator on the target."""
    caller, target = server.create_sa(), server.create_sa()
    server.grant(target, f"serviceAccount:{caller}", TOKEN_CREATOR)
    return sa_token(server, caller, tmp_path), caller, target


def _id_token(server: Server, token: str, target: str, **body: Any) -> str:
    r = iamcredentials(server, token, target, "generateIdToken", body)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _audience() -> str:
    return f"https://svc-{secrets.token_hex(3)}.example.com"


# ---------------------------------------------------------------- 4. ID tokens


def test_id_token_verifies_against_the_pem_certs_and_carries_google_claims(server: Server, pair: tuple) -> None:
    token, _, target = pair
    audience = _audience()
    raw = _id_token(server, token, target, audience=audience, includeEmail=True)

    claims = id_token.verify_token(raw, Request(), audience=audience, certs_url=f"{server.url}/oauth2/v1/certs")
    assert claims["iss"] == GOOGLE_ISSUER
    assert claims["aud"] == audience
    assert claims["sub"] == unique_id(server, target)
    assert claims["azp"] == claims["sub"]
    assert claims["email"] == target
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600

    header = jwt_header(raw)
    assert header["alg"] == "RS256"
    assert header["kid"] in requests.get(f"{server.url}/oauth2/v1/certs", timeout=10).json()


def test_id_token_verifies_against_the_jwks(server: Server, pair: tuple) -> None:
    token, _, target = pair
    audience = _audience()
    raw = _id_token(server, token, target, audience=audience)

    claims = id_token.verify_token(raw, Request(), audience=audience, certs_url=f"{server.url}/oauth2/v3/certs")
    assert claims["sub"] == unique_id(server, target)

    jwks = requests.get(f"{server.url}/oauth2/v3/certs", timeout=10).json()
    kid = jwt_header(raw)["kid"]
    entry = next(k for k in jwks["keys"] if k["kid"] == kid)
    assert entry["use"] == "sig" and entry["alg"] == "RS256" and entry["kty"] == "RSA"
    signing_key = jwt.PyJWKClient(f"{server.url}/oauth2/v3/certs").get_signing_key_from_jwt(raw)
    decoded = jwt.decode(raw, signing_key.key, algorithms=["RS256"], audience=audience, issuer=GOOGLE_ISSUER)
    assert decoded == claims


def test_id_token_for_another_audience_or_tampered_does_not_verify(server: Server, pair: tuple) -> None:
    token, _, target = pair
    audience = _audience()
    raw = _id_token(server, token, target, audience=audience)
    certs = f"{server.url}/oauth2/v1/certs"
    with pytest.raises(ValueError):
        id_token.verify_token(raw, Request(), audience=_audience(), certs_url=certs)
    head, _, sig = raw.split(".")
    forged_claims = {**jwt_claims(raw), "sub": "1"}
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    with pytest.raises(ValueError):
        id_token.verify_token(f"{head}.{forged_payload}.{sig}", Request(), audience=audience, certs_url=certs)


def test_id_token_email_only_with_include_email(server: Server, pair: tuple) -> None:
    token, _, target = pair
    audience = _audience()
    certs = f"{server.url}/oauth2/v1/certs"
    without = id_token.verify_token(_id_token(server, token, target, audience=audience), Request(),
                                    audience=audience, certs_url=certs)
    assert "email" not in without and "email_verified" not in without
    explicit_false = id_token.verify_token(_id_token(server, token, target, audience=audience, includeEmail=False),
                                           Request(), audience=audience, certs_url=certs)
    assert "email" not in explicit_false


def test_id_token_azp_is_the_email_with_use_email_azp(server: Server, pair: tuple) -> None:
    token, _, target = pair
    audience = _audience()
    claims = id_token.verify_token(
        _id_token(server, token, target, audience=audience, includeEmail=True, useEmailAzp=True),
        Request(), audience=audience, certs_url=f"{server.url}/oauth2/v1/certs")
    assert claims["azp"] == target
    assert claims["sub"] == unique_id(server, target)


def test_id_token_accepts_string_booleans(server: Server, pair: tuple) -> None:
    """google-auth's service_account.IDTokenCredentials sends {"includeEmail":"true","useEmailAzp":"true"}."""
    token, _, target = pair
    audience = _audience()
    claims = id_token.verify_token(
        _id_token(server, token, target, audience=audience, includeEmail="true", useEmailAzp="true",
                  delegates=None),
        Request(), audience=audience, certs_url=f"{server.url}/oauth2/v1/certs")
    assert claims["email"] == target
    assert claims["azp"] == target
    off = jwt_claims(_id_token(server, token, target, audience=audience, includeEmail="false"))
    assert "email" not in off


def test_id_token_needs_open_id_token_permission(server: Server, tmp_path: Path) -> None:
    caller, target = server.create_sa(), server.create_sa()
    token = sa_token(server, caller, tmp_path)
    err = google_error(iamcredentials(server, token, target, "generateIdToken", {"audience": _audience()}),
                       403, "PERMISSION_DENIED")
    assert "iam.serviceAccounts.getOpenIdToken" in err["message"]
    server.grant(target, f"serviceAccount:{caller}", "roles/iam.serviceAccountOpenIdTokenCreator")
    assert iamcredentials(server, token, target, "generateIdToken", {"audience": _audience()}).status_code == 200


def test_key_file_id_token_credentials_get_a_verifiable_id_token(server: Server, tmp_path: Path) -> None:
    """google-auth's service_account.IDTokenCredentials: a jwt-bearer grant with target_audience at token_uri."""
    sa = server.create_sa()
    audience = _audience()
    creds = service_account.IDTokenCredentials.from_service_account_file(
        str(server.key_file(sa, tmp_path / "key.json")), target_audience=audience)
    creds.refresh(Request())
    assert creds.valid and creds.token
    claims = id_token.verify_token(creds.token, Request(), audience=audience,
                                   certs_url=f"{server.url}/oauth2/v1/certs")
    assert claims["iss"] == GOOGLE_ISSUER
    assert claims["sub"] == unique_id(server, sa)
    assert claims["email"] == sa
    assert creds.expiry is not None


# ---------------------------------------------------------------- 5. signBlob / signJwt


def _account_certs(server: Server, email: str) -> dict[str, Any]:
    r = requests.get(f"{server.url}/service_accounts/v1/metadata/x509/{email}", timeout=10)
    assert r.status_code == 200, r.text
    return {kid: x509.load_pem_x509_certificate(pem.encode()).public_key() for kid, pem in r.json().items()}


def test_sign_blob_signature_verifies_with_the_published_x509_key(server: Server, pair: tuple) -> None:
    token, _, target = pair
    blob = secrets.token_bytes(200) + b"\xfb\xff"  # bytes whose base64 has '+' and '/'
    r = iamcredentials(server, token, target, "signBlob", {"payload": base64.b64encode(blob).decode()})
    assert r.status_code == 200, r.text
    body = r.json()
    signature = base64.b64decode(body["signedBlob"], validate=True)  # standard base64, padded

    public = _account_certs(server, target)[body["keyId"]]
    public.verify(signature, blob, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public.verify(signature, blob + b"!", padding.PKCS1v15(), hashes.SHA256())


def test_sign_blob_needs_permission(server: Server, tmp_path: Path) -> None:
    caller, target = server.create_sa(), server.create_sa()
    token = sa_token(server, caller, tmp_path)
    err = google_error(iamcredentials(server, token, target, "signBlob", {"payload": "aGk="}),
                       403, "PERMISSION_DENIED")
    assert "iam.serviceAccounts.signBlob" in err["message"]


def test_sign_jwt_returns_a_jwt_verifiable_by_its_kid(server: Server, pair: tuple) -> None:
    token, _, target = pair
    now = int(server_now(server, token, target))
    audience = _audience()
    payload = {"iss": target, "sub": target, "aud": audience, "iat": now, "exp": now + 600, "x": "y"}
    r = iamcredentials(server, token, target, "signJwt", {"payload": json.dumps(payload)})
    assert r.status_code == 200, r.text
    body = r.json()
    signed = body["signedJwt"]
    header = jwt.get_unverified_header(signed)
    assert header["alg"] == "RS256"
    assert header["kid"] == body["keyId"]

    public = _account_certs(server, target)[header["kid"]]
    # Verify with the server's notion of now (it may run ahead of this machine's clock).
    decoded = jwt.decode(signed, public, algorithms=["RS256"], audience=audience,
                         options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert decoded == payload
    assert decoded["exp"] > now
    # The per-account JWKS publishes the same key.
    jwk_client = jwt.PyJWKClient(f"{server.url}/service_accounts/v1/metadata/jwk/{target}")
    via_jwks = jwt.decode(signed, jwk_client.get_signing_key_from_jwt(signed).key, algorithms=["RS256"],
                          audience=audience, options={"verify_exp": False, "verify_iat": False})
    assert via_jwks == payload
    other = jwt.encode(payload, _other_key(), algorithm="RS256", headers={"kid": header["kid"]})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(other, public, algorithms=["RS256"], audience=audience, options={"verify_exp": False})


def _other_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("offset", [12 * 3600 + 600, -600], ids=["beyond-12h", "in-the-past"])
def test_sign_jwt_refuses_exp_out_of_range(server: Server, pair: tuple, offset: int) -> None:
    token, _, target = pair
    now = int(server_now(server, token, target))
    payload = {"iss": target, "sub": target, "aud": "https://x.example", "iat": now, "exp": now + offset}
    google_error(iamcredentials(server, token, target, "signJwt", {"payload": json.dumps(payload)}),
                 400, "INVALID_ARGUMENT")


def test_sign_jwt_accepts_exp_just_inside_12h(server: Server, pair: tuple) -> None:
    token, _, target = pair
    now = int(server_now(server, token, target))
    payload = {"iss": target, "aud": "https://x.example", "iat": now, "exp": now + 12 * 3600 - 120}
    r = iamcredentials(server, token, target, "signJwt", {"payload": json.dumps(payload)})
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["signedJwt"])["exp"] == payload["exp"]
