"""IAM Credentials over HTTP: generateAccessToken validation, delegation, and expiry stepped on the frozen clock."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest

from keyless.domain.lifetimes import format_timestamp
from tests.http.helpers import CLOUD, PROJECT, TOKEN_CREATOR, Api, assert_google_error, assert_oauth_error


def verb_path(email: str, verb: str, project: str = "-") -> str:
    return f"/v1/projects/{project}/serviceAccounts/{email}:{verb}"


# ---------------------------------------------------------------- request validation


@pytest.mark.parametrize("verb", ["generateAccessToken", "generateIdToken"])
@pytest.mark.parametrize("project", [PROJECT, "other-project", "_"])
def test_a_project_other_than_dash_is_400(api: Api, sa: dict[str, Any], verb: str, project: str) -> None:
    body = {"scope": [CLOUD]} if verb == "generateAccessToken" else {"audience": "https://example.com"}
    error = assert_google_error(api.call("POST", verb_path(sa["email"], verb, project), body), 400,
                                "INVALID_ARGUMENT")
    assert "-" in error["message"]


@pytest.mark.parametrize("body", [{}, {"scope": []}, {"scope": ""}, {"scope": None}, {"lifetime": "60s"},
                                  {"scope": ["  "]}])
def test_scope_is_required(api: Api, sa: dict[str, Any], body: dict[str, Any]) -> None:
    assert_google_error(api.call("POST", verb_path(sa["email"], "generateAccessToken"), body), 400,
                        "INVALID_ARGUMENT")


@pytest.mark.parametrize("lifetime", ["7200s", "3601s", "43200s", "86400s", "0s", "-60s", "3600", "1h", "abc"])
def test_lifetime_outside_the_limits_is_400(api: Api, sa: dict[str, Any], lifetime: str) -> None:
    r = api.call("POST", verb_path(sa["email"], "generateAccessToken"), {"scope": [CLOUD], "lifetime": lifetime})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_long_lifetime_with_the_org_policy_constraint(api: Api, sa: dict[str, Any]) -> None:
    constraint = "constraints/iam.allowServiceAccountCredentialLifetimeExtension"
    api.ok("POST", f"/v2/projects/{PROJECT}/policies", {
        "name": f"projects/{PROJECT}/policies/{constraint.split('/', 1)[1]}",
        "spec": {"rules": [{"values": {"allowedValues": [sa["email"]]}}]}})
    now = api.clock.now()
    out = api.sa_token(sa["email"], lifetime="7200s")
    assert out["expireTime"] == format_timestamp(now + 7200)
    assert_google_error(api.call("POST", verb_path(sa["email"], "generateAccessToken"),
                                 {"scope": [CLOUD], "lifetime": "43201s"}), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(("lifetime", "seconds"), [(None, 3600), ("3600s", 3600), ("600s", 600), ("1s", 1)])
def test_expire_time_follows_the_lifetime(api: Api, sa: dict[str, Any], lifetime: str | None, seconds: int) -> None:
    now = api.clock.now()
    extra = {"lifetime": lifetime} if lifetime else {}
    out = api.sa_token(sa["email"], **extra)
    assert out["expireTime"] == format_timestamp(now + seconds)
    assert out["accessToken"].startswith("ya29.")


def test_unknown_target_is_403(api: Api) -> None:
    r = api.call("POST", verb_path("ghost-bot@keyless-dev.iam.gserviceaccount.com", "generateAccessToken"),
                 {"scope": [CLOUD]})
    assert_google_error(r, 403, "PERMISSION_DENIED")


def test_owner_without_token_creator_is_403(api: Api) -> None:
    other = api.create_sa("plain-bot")
    error = assert_google_error(api.call("POST", verb_path(other["email"], "generateAccessToken"),
                                         {"scope": [CLOUD]}), 403, "PERMISSION_DENIED")
    assert error["details"][0]["metadata"]["permission"] == "iam.serviceAccounts.getAccessToken"


# ---------------------------------------------------------------- delegation


def _chain(api: Api, n: int) -> list[dict[str, Any]]:
    """Accounts c0..c(n-1): the owner may delegate to c0, and each ci may delegate to c(i+1)."""
    accounts = [api.create_sa(f"chain-bot-{i}") for i in range(n)]
    api.grant_owner_token_creator(accounts[0]["email"])
    for prev, nxt in itertools.pairwise(accounts):
        api.add_binding(f"/v1/projects/-/serviceAccounts/{nxt['email']}", TOKEN_CREATOR,
                        f"serviceAccount:{prev['email']}")
    return accounts


def test_delegation_chain(api: Api) -> None:
    accounts = _chain(api, 3)
    delegates = [f"projects/-/serviceAccounts/{a['email']}" for a in accounts[:2]]
    target = accounts[2]["email"]
    out = api.ok("POST", verb_path(target, "generateAccessToken"), {"scope": [CLOUD], "delegates": delegates})
    info = api.client.get("/tokeninfo", params={"access_token": out["accessToken"]}).json()
    assert info["email"] == target
    # Skipping a hop breaks the chain at the hop that lacks the grant.
    error = assert_google_error(api.call("POST", verb_path(target, "generateAccessToken"),
                                         {"scope": [CLOUD], "delegates": delegates[:1]}), 403, "PERMISSION_DENIED")
    assert target in error["details"][0]["metadata"]["resource"]
    # Delegating in the wrong order fails on the first hop.
    r = api.call("POST", verb_path(target, "generateAccessToken"),
                 {"scope": [CLOUD], "delegates": list(reversed(delegates))})
    assert_google_error(r, 403, "PERMISSION_DENIED")


def test_delegation_loops_are_400(api: Api) -> None:
    accounts = _chain(api, 2)
    d0 = f"projects/-/serviceAccounts/{accounts[0]['email']}"
    for delegates in ([d0, d0], [f"projects/-/serviceAccounts/{accounts[1]['email']}"],
                      [d0, f"projects/-/serviceAccounts/{accounts[0]['uniqueId']}"]):
        r = api.call("POST", verb_path(accounts[1]["email"], "generateAccessToken"),
                     {"scope": [CLOUD], "delegates": delegates})
        assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_too_many_delegates_is_400(api: Api, sa: dict[str, Any]) -> None:
    delegates = [f"projects/-/serviceAccounts/d-{i}@keyless-dev.iam.gserviceaccount.com" for i in range(11)]
    r = api.call("POST", verb_path(sa["email"], "generateAccessToken"), {"scope": [CLOUD], "delegates": delegates})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_delegates_need_the_dash_project(api: Api, sa: dict[str, Any]) -> None:
    r = api.call("POST", verb_path(sa["email"], "generateAccessToken"),
                 {"scope": [CLOUD], "delegates": [f"projects/{PROJECT}/serviceAccounts/{sa['email']}"]})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


# ---------------------------------------------------------------- expiry on the frozen clock


def test_access_token_expires_after_its_lifetime(api: Api, sa: dict[str, Any]) -> None:
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{sa['email']}")
    token = api.sa_token(sa["email"])["accessToken"]
    listing = f"/v1/projects/{PROJECT}/serviceAccounts"
    assert api.call("GET", listing, token=token).status_code == 200
    api.clock.advance(3599)
    assert api.call("GET", listing, token=token).status_code == 200
    api.clock.advance(2)  # 3601 s after minting
    assert_google_error(api.call("GET", listing, token=token), 401, "UNAUTHENTICATED")
    assert_oauth_error(api.client.get("/tokeninfo", params={"access_token": token}), 400, "invalid_token")


def test_access_token_is_401_after_advancing_3601(api: Api, sa: dict[str, Any]) -> None:
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{sa['email']}")
    token = api.sa_token(sa["email"])["accessToken"]
    assert api.call("GET", f"/v1/projects/{PROJECT}", token=token).status_code == 200
    api.clock.advance(3601)
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=token), 401, "UNAUTHENTICATED")


def test_short_lifetime_expires_sooner(api: Api, sa: dict[str, Any]) -> None:
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{sa['email']}")
    token = api.sa_token(sa["email"], lifetime="300s")["accessToken"]
    assert api.call("GET", f"/v1/projects/{PROJECT}", token=token).status_code == 200
    api.clock.advance(300)
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=token), 401, "UNAUTHENTICATED")


def test_owner_token_expires_too(api: Api) -> None:
    token = api.refresh_token_grant().json()["access_token"]
    info = api.client.get("/tokeninfo", params={"access_token": token}).json()
    assert info["expires_in"] == "3600"
    api.clock.advance(1800)
    assert api.client.get("/tokeninfo", params={"access_token": token}).json()["expires_in"] == "1800"
    api.clock.advance(1800)
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=token), 401, "UNAUTHENTICATED")


def test_impersonated_token_carries_the_requested_scopes(api: Api, sa: dict[str, Any]) -> None:
    scopes = ["https://www.googleapis.com/auth/userinfo.email", CLOUD]
    token = api.ok("POST", verb_path(sa["email"], "generateAccessToken"), {"scope": scopes})["accessToken"]
    info = api.client.get("/tokeninfo", params={"access_token": token}).json()
    assert info["scope"].split() == scopes
    assert info["email"] == sa["email"]
    narrow = api.ok("POST", verb_path(sa["email"], "generateAccessToken"),
                    {"scope": ["https://www.googleapis.com/auth/userinfo.email"]})["accessToken"]
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=narrow), 403, "PERMISSION_DENIED")


# ---------------------------------------------------------------- signBlob / signJwt basics


def test_sign_blob_shape(api: Api, sa: dict[str, Any]) -> None:
    out = api.ok("POST", verb_path(sa["email"], "signBlob"), {"payload": base64.b64encode(b"hello").decode()})
    assert set(out) == {"keyId", "signedBlob"}
    assert len(base64.b64decode(out["signedBlob"])) == 256


def test_sign_jwt_rejects_far_future_exp(api: Api, sa: dict[str, Any]) -> None:
    exp = int(api.clock.now()) + 13 * 3600
    r = api.call("POST", verb_path(sa["email"], "signJwt"), {"payload": f'{{"sub": "x", "exp": {exp}}}'})
    assert_google_error(r, 400, "INVALID_ARGUMENT")
    ok = api.ok("POST", verb_path(sa["email"], "signJwt"),
                {"payload": f'{{"sub": "x", "exp": {int(api.clock.now()) + 600}}}'})
    assert ok["signedJwt"].count(".") == 2
