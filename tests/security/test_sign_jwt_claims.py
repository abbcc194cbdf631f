"""signJwt never signs a JWT without an expiry, and no JWT or claims set whose meaning depends on which of two
same-named members a reader keeps is signed or accepted.

* A payload without ``exp`` gets ``exp`` = now + 1 h, as Google documents for signJwt (IAM v1: "this claim
  is added automatically, with a timestamp that is 1 hour in the future"); nothing else is added.
* A payload naming a claim twice (``{"exp": <10 years>, "exp": <10 min>}``) is refused with 400
  INVALID_ARGUMENT: the 12-hour check and a relying party could read different values.
* A JWT-bearer assertion or a self-signed JWT whose header or claims name a member twice is refused.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
import pytest

from tests.http.helpers import Api, assert_google_error, assert_oauth_error
from tests.security.test_forgery import (
    API_AUD,
    CLOUD,
    JWT_BEARER,
    TOKEN_AUD,
    World,
    _world,
    b64url,
    rs256,
)

YEAR = 365 * 86400


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with _world(tmp_path_factory.mktemp("sign-jwt-claims")) as w:
        w.api.grant_owner_token_creator(w.victim.email)
        yield w


def sign_jwt(api: Api, email: str, payload: str, *, legacy: bool = False) -> Any:
    project = "keyless-dev" if legacy else "-"
    return api.call("POST", f"/v1/projects/{project}/serviceAccounts/{email}:signJwt", {"payload": payload})


def claims_of(signed: str) -> dict[str, Any]:
    return dict(pyjwt.decode(signed, options={"verify_signature": False}))


@pytest.mark.parametrize("legacy", [False, True], ids=["iamcredentials", "iam-v1"])
def test_sign_jwt_without_exp_expires_in_an_hour(world: World, legacy: bool) -> None:
    r = sign_jwt(world.api, world.victim.email, '{"sub": "me", "aud": "https://relying.example"}', legacy=legacy)
    assert r.status_code == 200, r.text
    assert claims_of(r.json()["signedJwt"]) == {"sub": "me", "aud": "https://relying.example",
                                                "exp": world.now + 3600}


def test_sign_jwt_keeps_a_given_exp_and_the_12_hour_cap(world: World) -> None:
    exp = world.now + 600
    r = sign_jwt(world.api, world.victim.email, json.dumps({"sub": "me", "exp": exp}))
    assert r.status_code == 200, r.text
    assert claims_of(r.json()["signedJwt"]) == {"sub": "me", "exp": exp}
    assert_google_error(sign_jwt(world.api, world.victim.email, json.dumps({"sub": "me", "exp": world.now + YEAR})),
                        400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("legacy", [False, True], ids=["iamcredentials", "iam-v1"])
@pytest.mark.parametrize("payload", [
    '{"exp": %(far)d, "exp": %(near)d}',
    '{"exp": %(near)d, "exp": %(far)d}',
    '{"sub": "a", "sub": "b", "exp": %(near)d}',
    '{"sub": "a", "nested": {"k": 1, "k": 2}}',
], ids=["exp-far-first", "exp-near-first", "sub", "nested"])
def test_sign_jwt_refuses_duplicate_claims(world: World, payload: str, legacy: bool) -> None:
    text = payload % {"far": world.now + 10 * YEAR, "near": world.now + 600}
    err = assert_google_error(sign_jwt(world.api, world.victim.email, text, legacy=legacy), 400, "INVALID_ARGUMENT")
    assert "more than once" in err["message"], err


def raw_jwt(world: World, header_json: str, claims_json: str) -> str:
    signing_input = f"{b64url(header_json.encode())}.{b64url(claims_json.encode())}"
    return f"{signing_input}.{rs256(world.victim.key, signing_input)}"


def claims_json(world: World, aud: str, *, before: str = "", after: str = "") -> str:
    """The claims as JSON text; ``before``/``after`` are members written ahead of or behind the usual ones (a
    reader keeping the last of two same-named members sees the usual value when the duplicate comes first)."""
    email = world.victim.email
    body = (f'"iss": "{email}", "sub": "{email}", "aud": "{aud}", "iat": {world.now}, '
            f'"exp": {world.now + 600}')
    if aud == TOKEN_AUD:
        body += f', "scope": "{CLOUD}"'
    return "{" + before + body + after + "}"


def header_json(world: World, *, before: str = "") -> str:
    return '{' + before + f'"alg": "RS256", "typ": "JWT", "kid": "{world.victim.key_id}"' + '}'


def grant(world: World, assertion: str) -> Any:
    return world.api.client.post("/token", data={"grant_type": JWT_BEARER, "assertion": assertion})


def test_duplicate_members_in_a_jwt_bearer_assertion_are_refused(world: World) -> None:
    other = world.other.email
    far = world.now + 10 * YEAR
    ok = grant(world, raw_jwt(world, header_json(world), claims_json(world, TOKEN_AUD)))
    assert ok.status_code == 200, ok.text  # the control: the same assertion without a duplicate
    for header, claims in [
        (header_json(world), claims_json(world, TOKEN_AUD, before=f'"exp": {far}, ')),
        (header_json(world), claims_json(world, TOKEN_AUD, before=f'"iss": "{other}", "sub": "{other}", ')),
        (header_json(world), claims_json(world, TOKEN_AUD, before='"scope": "openid", ')),
        (header_json(world), claims_json(world, TOKEN_AUD, after=f', "iat": {world.now}')),
        (header_json(world, before='"alg": "none", '), claims_json(world, TOKEN_AUD)),
        (header_json(world, before=f'"kid": "{world.other.key_id}", '), claims_json(world, TOKEN_AUD)),
    ]:
        assert_oauth_error(grant(world, raw_jwt(world, header, claims)), 400, "invalid_grant")


def test_duplicate_members_in_a_self_signed_jwt_are_refused(world: World) -> None:
    far = world.now + 10 * YEAR
    ok = world.probe(raw_jwt(world, header_json(world), claims_json(world, API_AUD)))
    assert ok.status_code == 200, ok.text
    for header, claims in [
        (header_json(world), claims_json(world, API_AUD, before=f'"exp": {far}, ')),
        (header_json(world), claims_json(world, API_AUD, before='"aud": "https://evil.example", ')),
        (header_json(world), claims_json(world, API_AUD, after=f', "iat": {world.now}')),
        (header_json(world, before=f'"kid": "{secrets.token_hex(20)}", '), claims_json(world, API_AUD)),
    ]:
        assert_google_error(world.probe(raw_jwt(world, header, claims)), 401, "UNAUTHENTICATED")


def test_payload_is_checked_once_as_sent(world: World) -> None:
    """The payload is signed as the caller sent it when it carries exp (so its text is what was checked)."""
    text = '{"sub":"me",  "exp": ' + str(world.now + 600) + "}"
    r = sign_jwt(world.api, world.victim.email, text)
    assert r.status_code == 200, r.text
    payload = r.json()["signedJwt"].split(".")[1]
    assert base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode() == text
