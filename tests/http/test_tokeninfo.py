"""tokeninfo's JSON, pinned member by member (order included) as Google's endpoint writes it, and revoke: the core
answers typed results (``AccessTokenInfo``, ``IdTokenInfo``) that ``keyless.http.oauth`` renders."""

from __future__ import annotations

from typing import Any

import jwt

from tests.http.helpers import CLOUD, Api, assert_oauth_error


def _verb(email: str, verb: str) -> str:
    return f"/v1/projects/-/serviceAccounts/{email}:{verb}"


def test_a_service_accounts_access_token(api: Api, sa: dict[str, Any]) -> None:
    token = api.ok("POST", _verb(sa["email"], "generateAccessToken"), {"scope": [CLOUD], "lifetime": "600s"})
    now = int(api.clock.now())
    info = api.client.get("/tokeninfo", params={"access_token": token["accessToken"]})
    assert info.status_code == 200, info.text
    assert list(info.json().items()) == [
        ("azp", sa["uniqueId"]), ("aud", sa["uniqueId"]), ("sub", sa["uniqueId"]), ("scope", CLOUD),
        ("exp", str(now + 600)), ("expires_in", "600"), ("email", sa["email"]), ("email_verified", "true"),
        ("access_type", "online")]
    api.clock.advance(100)
    # The same from the form, from the Authorization header, and at v1's and v3's paths.
    posted = api.client.post("/oauth2/v3/tokeninfo", data={"access_token": token["accessToken"]}).json()
    bearer = api.client.get("/oauth2/v1/tokeninfo",
                            headers={"Authorization": f"Bearer {token['accessToken']}"}).json()
    assert posted == bearer == {**info.json(), "expires_in": "500"}


def test_a_users_access_token_names_its_client(api: Api) -> None:
    token = api.refresh_token_grant().json()["access_token"]
    info = api.client.get("/tokeninfo", params={"access_token": token}).json()
    assert list(info) == ["azp", "aud", "sub", "scope", "exp", "expires_in", "email", "email_verified",
                          "access_type"]
    assert info["azp"] == info["aud"] != info["sub"]  # the user's OAuth client, not the user


def test_an_id_token(api: Api, sa: dict[str, Any]) -> None:
    token = api.ok("POST", _verb(sa["email"], "generateIdToken"),
                   {"audience": "https://app.example", "includeEmail": True})["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    info = api.client.get("/tokeninfo", params={"id_token": token})
    assert info.status_code == 200, info.text
    # Every claim in the token's order, numbers and booleans as strings; then alg, kid and typ.
    expected = [(k, str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int) else v)
                for k, v in claims.items()]
    assert list(info.json().items()) == [*expected, ("alg", "RS256"), ("kid", kid), ("typ", "JWT")]
    assert info.json()["email_verified"] == "true" and isinstance(info.json()["exp"], str)


def test_errors_and_revoke(api: Api, sa: dict[str, Any]) -> None:
    assert_oauth_error(api.client.get("/tokeninfo"), 400, "invalid_request")
    assert_oauth_error(api.client.get("/tokeninfo", params={"id_token": "a.b.c"}), 400, "invalid_token")
    token = api.ok("POST", _verb(sa["email"], "generateAccessToken"), {"scope": [CLOUD]})["accessToken"]
    assert_oauth_error(api.client.post("/revoke", data={}), 400, "invalid_request")
    assert_oauth_error(api.client.get("/o/oauth2/revoke", params={"token": "garbage"}), 400, "invalid_token")
    revoked = api.client.post("/revoke", data={"token": token})
    assert (revoked.status_code, revoked.json()) == (200, {})
    assert api.client.get("/tokeninfo", params={"access_token": token}).json() == {
        "error": "invalid_token", "error_description": "Invalid Value"}
