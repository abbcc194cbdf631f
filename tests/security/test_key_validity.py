"""A key outside its validity window (``validAfterTime``..``validBeforeTime``, read on the injected clock)
authenticates nothing and is published nowhere: not as a JWT-bearer assertion's key on ``/token``, not as the
key of a self-signed JWT, not in the per-account x509/jwk/raw documents. Each case has a control: the same
construction with a key in its window is accepted (and published)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.crypto.keys import self_signed_certificate
from tests.http.helpers import CLOUD, Api, assert_google_error, assert_oauth_error
from tests.security.test_forgery import API_AUD, JWT_BEARER, TOKEN_AUD, jwt

HOUR = 3600
YEAR = 365 * 86400


@dataclass
class Uploaded:
    email: str
    key_id: str
    key: rsa.RSAPrivateKey


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def upload(api: Api, email: str, not_before: float, not_after: float) -> Uploaded:
    """keys:upload of a certificate valid from ``not_before`` to ``not_after`` (epoch seconds)."""
    key = _rsa()
    cert = self_signed_certificate(key, "uploaded", dt.datetime.fromtimestamp(not_before, tz=dt.UTC),
                                   dt.datetime.fromtimestamp(not_after, tz=dt.UTC))
    from cryptography.hazmat.primitives import serialization

    pem = cert.public_bytes(serialization.Encoding.PEM)
    out = api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys:upload",
                 {"publicKeyData": base64.b64encode(pem).decode()})
    return Uploaded(email, out["name"].rsplit("/", 1)[1], key)


def claims(api: Api, email: str, aud: str) -> dict[str, Any]:
    now = int(api.clock.now())
    out: dict[str, Any] = {"iss": email, "sub": email, "aud": aud, "iat": now, "exp": now + 600}
    if aud == TOKEN_AUD:
        out["scope"] = CLOUD
    return out


def grant(api: Api, key: Uploaded, *, kid: bool = True) -> Any:
    assertion = jwt(key.key, claims(api, key.email, TOKEN_AUD), kid=key.key_id if kid else None)
    return api.client.post("/token", data={"grant_type": JWT_BEARER, "assertion": assertion})


def self_signed_call(api: Api, key: Uploaded, *, kid: bool = True) -> Any:
    bearer = jwt(key.key, claims(api, key.email, API_AUD), kid=key.key_id if kid else None)
    return api.call("POST", f"/v1/projects/-/serviceAccounts/{key.email}:testIamPermissions",
                    {"permissions": ["iam.serviceAccounts.get"]}, token=bearer)


def published_ids(api: Api, email: str) -> list[set[str]]:
    x509 = api.client.get(f"/service_accounts/v1/metadata/x509/{email}").json()
    robot = api.client.get(f"/robot/v1/metadata/x509/{email}").json()
    raw = api.client.get(f"/service_accounts/v1/metadata/raw/{email}").json()
    jwk = api.client.get(f"/service_accounts/v1/metadata/jwk/{email}").json()
    return [set(x509), set(robot), set(raw), {k["kid"] for k in jwk["keys"]}]


def assert_refused(api: Api, key: Uploaded) -> None:
    for kid in (True, False):
        assert_oauth_error(grant(api, key, kid=kid), 400, "invalid_grant")
        assert_google_error(self_signed_call(api, key, kid=kid), 401, "UNAUTHENTICATED")


def assert_accepted(api: Api, key: Uploaded) -> None:
    for kid in (True, False):
        r = grant(api, key, kid=kid)
        assert r.status_code == 200 and "access_token" in r.json(), r.text
        assert self_signed_call(api, key, kid=kid).status_code == 200


@pytest.fixture
def account(api: Api) -> str:
    return str(api.create_sa(f"valid-{secrets.token_hex(3)}")["email"])


def test_a_key_in_its_window_works_and_is_published(api: Api, account: str) -> None:
    now = api.clock.now()
    key = upload(api, account, now - HOUR, now + YEAR)
    assert_accepted(api, key)
    assert all(key.key_id in ids for ids in published_ids(api, account))


def test_an_expired_key_authenticates_nothing(api: Api, account: str) -> None:
    key = upload(api, account, dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp(),
                 dt.datetime(2021, 1, 1, tzinfo=dt.UTC).timestamp())
    assert_refused(api, key)
    assert all(key.key_id not in ids for ids in published_ids(api, account))


def test_a_key_valid_from_2090_authenticates_nothing_and_is_not_published(api: Api, account: str) -> None:
    key = upload(api, account, dt.datetime(2090, 1, 1, tzinfo=dt.UTC).timestamp(),
                 dt.datetime(2091, 1, 1, tzinfo=dt.UTC).timestamp())
    assert_refused(api, key)
    assert all(key.key_id not in ids for ids in published_ids(api, account))


def test_the_window_follows_the_injected_clock(api: Api, account: str) -> None:
    now = api.clock.now()
    later = upload(api, account, now + HOUR, now + 3 * HOUR)
    assert_refused(api, later)
    assert all(later.key_id not in ids for ids in published_ids(api, account))
    api.clock.advance(2 * HOUR)
    assert_accepted(api, later)
    assert all(later.key_id in ids for ids in published_ids(api, account))
    api.clock.advance(2 * HOUR)  # past validBeforeTime
    assert_refused(api, later)
    assert all(later.key_id not in ids for ids in published_ids(api, account))
