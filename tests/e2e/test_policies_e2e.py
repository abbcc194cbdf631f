"""Service-account IAM policies end to end: etag concurrency control on setIamPolicy, and conditional
(version 3) bindings whose ``request.time`` conditions follow the server's clock.

Tests that move the clock use the function-scoped ``fresh_server``: the clock only moves forward.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import requests

from tests.conftest import Server
from tests.e2e.support import TOKEN_CREATOR, google_error, mint, sa_token


def _policy_path(email: str) -> str:
    return f"/v1/projects/-/serviceAccounts/{email}"


def _get(server: Server, email: str, version: int = 3) -> dict[str, Any]:
    return dict(server.owner("POST", f"{_policy_path(email)}:getIamPolicy?options.requestedPolicyVersion={version}"))


def _set(server: Server, email: str, policy: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}{_policy_path(email)}:setIamPolicy", json={"policy": policy}, timeout=10,
                         headers={"Authorization": f"Bearer {server.owner_token}"})


def _members(policy: dict[str, Any], role: str = TOKEN_CREATOR) -> set[str]:
    return {m for b in policy.get("bindings", []) if b["role"] == role for m in b["members"]}


def _rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _advance(server: Server, seconds: int) -> float:
    """Move the server's clock forward; return its new now."""
    body = server.owner("POST", "/keyless/v1/debug/clock:advance", {"seconds": seconds})
    return dt.datetime.strptime(body["now"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


# ---------------------------------------------------------------- 7. etags


def test_stale_etag_is_aborted_and_changes_nothing_while_a_missing_etag_overwrites(server: Server,
                                                                                    tmp_path: Path) -> None:
    target, first, second = server.create_sa(), server.create_sa(), server.create_sa()
    first_token, second_token = sa_token(server, first, tmp_path), sa_token(server, second, tmp_path)

    original = _get(server, target)
    stale_etag = original["etag"]
    written = _set(server, target, {"etag": stale_etag,
                                    "bindings": [{"role": TOKEN_CREATOR, "members": [f"serviceAccount:{first}"]}]})
    assert written.status_code == 200, written.text
    current = written.json()
    assert current["etag"] != stale_etag
    assert _members(current) == {f"serviceAccount:{first}"}

    # A writer that read before that change is refused, and nothing it sent is applied.
    err = google_error(_set(server, target, {"etag": stale_etag, "bindings": [
        {"role": TOKEN_CREATOR, "members": [f"serviceAccount:{second}"]}]}), 409, "ABORTED")
    assert "concurrent" in err["message"].lower(), err
    after = _get(server, target)
    assert after["etag"] == current["etag"]
    assert _members(after) == {f"serviceAccount:{first}"}
    assert mint(server, first_token, target).status_code == 200
    google_error(mint(server, second_token, target), 403, "PERMISSION_DENIED")

    # Without an etag the write is unconditional and replaces the whole policy.
    overwritten = _set(server, target, {"bindings": [{"role": TOKEN_CREATOR,
                                                      "members": [f"serviceAccount:{second}"]}]})
    assert overwritten.status_code == 200, overwritten.text
    assert overwritten.json()["etag"] not in (current["etag"], stale_etag)
    assert _members(_get(server, target)) == {f"serviceAccount:{second}"}
    assert mint(server, second_token, target).status_code == 200
    google_error(mint(server, first_token, target), 403, "PERMISSION_DENIED")


def test_current_etag_is_accepted_repeatedly(server: Server) -> None:
    target = server.create_sa()
    etag = _get(server, target)["etag"]
    for i in range(3):
        r = _set(server, target, {"etag": etag, "bindings": [
            {"role": TOKEN_CREATOR, "members": [f"user:u{i}@example.com"]}]})
        assert r.status_code == 200, r.text
        etag = r.json()["etag"]
        assert _get(server, target)["etag"] == etag


# ---------------------------------------------------------------- 8. conditional bindings and the clock


def test_time_conditions_follow_the_server_clock(fresh_server: Server, tmp_path: Path) -> None:
    server = fresh_server
    target, expiring, starting = server.create_sa(), server.create_sa(), server.create_sa()
    now = _advance(server, 1)  # also reads the server's clock, which may already differ from ours
    deadline = _rfc3339(now + 300)
    server.grant(target, f"serviceAccount:{expiring}", condition={
        "title": "until deadline", "expression": f'request.time < timestamp("{deadline}")'})
    server.grant(target, f"serviceAccount:{starting}", condition={
        "title": "after deadline", "expression": f'request.time > timestamp("{deadline}")'})
    policy = _get(server, target)
    assert policy["version"] == 3
    conditions = {b["condition"]["expression"] for b in policy["bindings"] if "condition" in b}
    assert conditions == {f'request.time < timestamp("{deadline}")', f'request.time > timestamp("{deadline}")'}

    expiring_token, starting_token = sa_token(server, expiring, tmp_path), sa_token(server, starting, tmp_path)
    assert mint(server, expiring_token, target).status_code == 200
    google_error(mint(server, starting_token, target), 403, "PERMISSION_DENIED")

    assert _advance(server, 600) >= now + 600

    err = google_error(mint(server, expiring_token, target), 403, "PERMISSION_DENIED")
    assert "iam.serviceAccounts.getAccessToken" in err["message"]
    ok = mint(server, starting_token, target)
    assert ok.status_code == 200, ok.text

    # The same clock expires tokens: an hour on, the callers' key-file tokens are refused.
    _advance(server, 3600)
    google_error(mint(server, starting_token, target), 401, "UNAUTHENTICATED")


def test_conditional_policy_cannot_be_read_as_version_1(server: Server) -> None:
    target = server.create_sa()
    server.grant(target, "user:someone@example.com", condition={
        "title": "far future", "expression": 'request.time < timestamp("2999-01-01T00:00:00Z")'})
    r = requests.post(f"{server.url}{_policy_path(target)}:getIamPolicy?options.requestedPolicyVersion=1",
                      timeout=10, headers={"Authorization": f"Bearer {server.owner_token}"})
    google_error(r, 400, "INVALID_ARGUMENT")
    assert _get(server, target)["version"] == 3
