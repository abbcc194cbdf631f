"""Numbers and lists from callers: ASCII digits only, bounded, in range, and never a 500.

Python's ``int()`` and ``str.isdigit()`` accept any Unicode digit (``"٣٦٠٠"`` is 3600) and ``int()`` refuses
strings of more than 4300 digits with an exception; every number a caller sends must be checked before either
sees it."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
import pytest

from keyless.cli.audit import since_timestamp
from keyless.cli.client import CliError
from keyless.cli.client import parse_duration as cli_duration
from keyless.domain.lifetimes import parse_duration
from keyless.errors import InvalidArgument
from tests.http.helpers import CLOUD, PROJECT, Api, assert_google_error

HUGE = "1" + "0" * 5000
ARABIC_3600 = "\u0663\u0666\u0660\u0660"  # ٣٦٠٠


def account_path(sa: dict[str, Any], verb: str = "") -> str:
    return f"/v1/projects/-/serviceAccounts/{sa['email']}{verb}"


POLICY_PATHS = {"account": lambda account: account_path(account),
                "project": lambda account: f"/v1/projects/{PROJECT}"}


# ---------------------------------------------------------------- policy versions


@pytest.mark.parametrize("resource", sorted(POLICY_PATHS))
@pytest.mark.parametrize("raw", [
    b'{"policy": {"version": %s}}' % HUGE.encode(),
    b'{"policy": {"version": "%s"}}' % HUGE.encode(),
    b'{"policy": {"version": "\\u0663"}}',
    b'{"policy": {"version": " 3"}}',
    b'{"policy": {"version": "1_0"}}',
    b'{"policy": {"version": 3.5}}',
    b'{"policy": {"version": -1}}',
], ids=["huge-number", "huge-string", "arabic-3", "space", "underscore", "fraction", "negative"])
def test_a_bad_policy_version_is_400(api: Api, sa: dict[str, Any], resource: str, raw: bytes) -> None:
    path = POLICY_PATHS[resource](sa)
    before = api.ok("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    error = assert_google_error(api.call("POST", f"{path}:setIamPolicy", raw=raw), 400, "INVALID_ARGUMENT")
    assert len(error["message"]) < 300
    assert api.ok("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}}) == before


@pytest.mark.parametrize("version", [1, 3, "1", "3"])
def test_a_good_policy_version_is_accepted(api: Api, sa: dict[str, Any], version: object) -> None:
    policy = api.ok("POST", account_path(sa, ":getIamPolicy"), {})
    policy["version"] = version
    api.ok("POST", account_path(sa, ":setIamPolicy"), {"policy": policy})


@pytest.mark.parametrize("resource", sorted(POLICY_PATHS))
@pytest.mark.parametrize("value", [2, 4, 7, -1, "2", "\u0663", " 3", "3 ", "1_0", "+3", True, 3.0, [3], HUGE])
def test_requested_policy_version_must_be_0_1_or_3(api: Api, sa: dict[str, Any], resource: str,
                                                  value: object) -> None:
    path = f"{POLICY_PATHS[resource](sa)}:getIamPolicy"
    body = assert_google_error(api.call("POST", path, {"options": {"requestedPolicyVersion": value}}), 400,
                               "INVALID_ARGUMENT")
    assert len(body["message"]) < 300
    if isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) < 100:
        query = {"options.requestedPolicyVersion": str(value)}
        assert_google_error(api.call("POST", path, params=query), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("resource", sorted(POLICY_PATHS))
@pytest.mark.parametrize("value", [0, 1, 3, "0", "1", "3", None, ""])
def test_requested_policy_version_0_1_3(api: Api, sa: dict[str, Any], resource: str, value: object) -> None:
    path = f"{POLICY_PATHS[resource](sa)}:getIamPolicy"
    assert "etag" in api.ok("POST", path, {"options": {"requestedPolicyVersion": value}})
    if value is not None:
        assert "etag" in api.ok("POST", path, params={"options.requestedPolicyVersion": str(value)})


# ---------------------------------------------------------------- lifetimes


@pytest.mark.parametrize("lifetime", [f"{ARABIC_3600}s", "\uff13\uff16\uff10\uff10s", "60.\u0665s", "3600s\n"],
                         ids=["arabic-indic", "fullwidth", "arabic-fraction", "trailing-newline"])
def test_a_lifetime_takes_ascii_digits_only(api: Api, sa: dict[str, Any], lifetime: str) -> None:
    r = api.call("POST", account_path(sa, ":generateAccessToken"), {"scope": [CLOUD], "lifetime": lifetime})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("text", [f"{ARABIC_3600}s", "\u0661.5s", "1.\u0665s", "60s\n", " 60s"])
def test_a_duration_takes_ascii_digits_only(text: str) -> None:
    # Every proto3 Duration a caller sends (lifetimes, the clock advance of time travel) is parsed here.
    with pytest.raises(InvalidArgument):
        parse_duration(text, field="lifetime")
    assert parse_duration("60.5s", field="lifetime") == 60.5


# ---------------------------------------------------------------- lists of the credential verbs


@pytest.mark.parametrize("body", [{"scope": CLOUD}, {"scope": f"{CLOUD} {CLOUD}"}, {"scope": {"a": CLOUD}},
                                  {"scope": [CLOUD], "delegates": "projects/-/serviceAccounts/x@y.com"},
                                  {"scope": [CLOUD], "delegates": {"a": 1}}])
def test_the_list_fields_of_generate_access_token_must_be_lists(api: Api, sa: dict[str, Any],
                                                                body: dict[str, Any]) -> None:
    assert_google_error(api.call("POST", account_path(sa, ":generateAccessToken"), body), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("verb,body", [
    ("generateIdToken", {"audience": "https://example.com", "delegates": "x@y.com"}),
    ("signBlob", {"payload": "aGVsbG8=", "delegates": "x@y.com"}),
    ("signJwt", {"payload": "{}", "delegates": "x@y.com"}),
])
def test_delegates_must_be_a_list_on_every_verb(api: Api, sa: dict[str, Any], verb: str,
                                                body: dict[str, Any]) -> None:
    assert_google_error(api.call("POST", account_path(sa, f":{verb}"), body), 400, "INVALID_ARGUMENT")


# ---------------------------------------------------------------- pages


def audit_page(api: Api, **params: str) -> Any:
    return api.call("GET", "/v1/auditLog", params=params)


@pytest.mark.parametrize("token", [
    base64.urlsafe_b64encode(b"9" * 30).decode(),  # beyond a 64-bit integer: the database refuses it
    base64.urlsafe_b64encode(b"9" * 3000).decode(),
    base64.urlsafe_b64encode(b"-5").decode(),
    base64.urlsafe_b64encode(ARABIC_3600.encode()).decode(),
    base64.urlsafe_b64encode(b" 5").decode(),
    "not base64 at all!",
    "\u0663",
])
def test_a_bad_audit_page_token_is_400(api: Api, token: str) -> None:
    assert_google_error(audit_page(api, pageToken=token), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("size", ["-1", "-1000", "\u0663", "1.5", " 5", "1_0", HUGE[:3000]])
def test_a_bad_audit_page_size_is_400(api: Api, size: str) -> None:
    assert_google_error(audit_page(api, pageSize=size), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("size", ["-1", "\u0663", " 5", "1_0", "+5"])
def test_a_bad_service_account_page_size_is_400(api: Api, size: str) -> None:
    r = api.call("GET", f"/v1/projects/{PROJECT}/serviceAccounts", params={"pageSize": size})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_audit_pages_still_work(api: Api, sa: dict[str, Any]) -> None:
    first = audit_page(api, pageSize="1").json()
    assert len(first["entries"]) == 1 and first["nextPageToken"]
    second = audit_page(api, pageSize="1", pageToken=first["nextPageToken"]).json()
    assert second["entries"][0]["insertId"] != first["entries"][0]["insertId"]
    assert len(audit_page(api, pageSize="0").json()["entries"]) > 1
    assert len(audit_page(api, pageSize="5000").json()["entries"]) > 1


# ---------------------------------------------------------------- identifiers


@pytest.mark.parametrize("ident", ["\u0661\u0662\u0663", "\uff11\uff12\uff13"])
def test_a_unique_id_takes_ascii_digits_only(api: Api, ident: str) -> None:
    r = api.call("GET", f"/v1/projects/-/serviceAccounts/{ident}")
    assert r.status_code in (400, 403, 404), r.text


# ---------------------------------------------------------------- the CLI's durations


@pytest.mark.parametrize("text", [ARABIC_3600, f"{ARABIC_3600}s", "\u0663m", "9" * 5000, "9" * 5000 + "s"])
def test_cli_durations_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(CliError):
        cli_duration(text)
    assert cli_duration("1h30m") == 5400 and cli_duration("90") == 90


@pytest.mark.parametrize("text", ["\u0663m", "9" * 50 + "d"])
def test_cli_audit_since_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(CliError):
        since_timestamp(text)
    assert since_timestamp("999999999d") == "0001-01-01T00:00:00Z"


# ---------------------------------------------------------------- JWT times (already refused: a regression guard)


@pytest.mark.parametrize("times", [
    {"exp": float("nan"), "iat": float("nan")},
    {"exp": float("nan")},
    {"exp": 10**400},
    {"iat": -(10**400)},
    {"exp": float("inf"), "iat": float("-inf")},
    {"nbf": float("nan")},
], ids=["nan-both", "nan-exp", "huge-exp", "huge-iat", "infinite", "nan-nbf"])
def test_jwt_times_must_be_finite_numbers(api: Api, sa: dict[str, Any], times: dict[str, Any]) -> None:
    created = api.ok("POST", account_path(sa, "/keys"), {})
    key = json.loads(base64.b64decode(created["privateKeyData"]))
    now = int(api.clock.now())
    claims = {"iss": sa["email"], "sub": sa["email"], "aud": "https://iam.googleapis.com/", "iat": now,
              "exp": now + 600, **times}
    token = pyjwt.encode(claims, key["private_key"], algorithm="RS256", headers={"kid": key["private_key_id"]})
    r = api.call("GET", account_path(sa), token=token)
    assert_google_error(r, 401, "UNAUTHENTICATED")
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": pyjwt.encode(
        {**claims, "aud": "https://oauth2.googleapis.com/token", "scope": CLOUD}, key["private_key"],
        algorithm="RS256", headers={"kid": key["private_key_id"]})}
    r = api.client.post("/token", data=grant)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
