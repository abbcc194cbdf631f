"""Decisions remembered between requests (granted chains, authenticated tokens) are forgotten by the very next
request after any change that could alter them, and are never remembered when a condition (the time) decides."""

from __future__ import annotations

import time
from typing import Any

import pytest

from keyless.http.app import build_app
from keyless.service.app import Keyless
from keyless.storage.cache import CachingStore
from keyless.storage.sqlite import SqliteStore
from tests.http.helpers import BASE, CLOUD, PROJECT, TOKEN_CREATOR, Api, NoServerErrors, assert_google_error

OWNER = "user:owner@keyless.local"


def gat_path(email: str) -> str:
    return f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken"


def gat(api: Api, email: str, *, token: str | None = None, delegates: list[str] | None = None) -> Any:
    body: dict[str, Any] = {"scope": [CLOUD]}
    if delegates:
        body["delegates"] = delegates
    return api.call("POST", gat_path(email), body, token=token)


def set_bindings(api: Api, resource_path: str, bindings: list[dict[str, Any]]) -> None:
    policy = api.ok("POST", f"{resource_path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    policy["bindings"] = bindings
    if any("condition" in b for b in bindings):
        policy["version"] = 3
    api.ok("POST", f"{resource_path}:setIamPolicy", {"policy": policy})


@pytest.fixture
def target(api: Api) -> str:
    email: str = api.create_sa("memo-target")["email"]
    return email


def test_removed_account_binding_is_denied_on_the_next_request(api: Api, target: str) -> None:
    api.grant_owner_token_creator(target)
    for _ in range(3):
        assert gat(api, target).status_code == 200
    set_bindings(api, f"/v1/projects/-/serviceAccounts/{target}", [])
    assert_google_error(gat(api, target), 403, "PERMISSION_DENIED")


def test_removed_project_binding_is_denied_on_the_next_request(api: Api, target: str) -> None:
    project = f"/v1/projects/{PROJECT}"
    before = api.ok("POST", f"{project}:getIamPolicy", {})["bindings"]
    set_bindings(api, project, [*before, {"role": TOKEN_CREATOR, "members": [OWNER]}])
    assert gat(api, target).status_code == 200
    assert gat(api, target).status_code == 200
    set_bindings(api, project, before)
    assert_google_error(gat(api, target), 403, "PERMISSION_DENIED")


def test_group_membership_change_is_seen_on_the_next_request(api: Api, target: str) -> None:
    caller = api.create_sa("memo-caller")["email"]
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{caller}")
    api.grant_owner_token_creator(caller)
    caller_token = api.sa_token(caller)["accessToken"]
    api.ok("PUT", "/keyless/v1/groups/memo-team@example.com", {"members": [f"serviceAccount:{caller}"]})
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target}", TOKEN_CREATOR, "group:memo-team@example.com")
    assert gat(api, target, token=caller_token).status_code == 200
    assert gat(api, target, token=caller_token).status_code == 200
    api.ok("PUT", "/keyless/v1/groups/memo-team@example.com", {"members": []})
    assert_google_error(gat(api, target, token=caller_token), 403, "PERMISSION_DENIED")


def test_disabled_target_then_enabled_again(api: Api, target: str) -> None:
    api.grant_owner_token_creator(target)
    assert gat(api, target).status_code == 200
    api.ok("POST", f"/v1/projects/{PROJECT}/serviceAccounts/{target}:disable", {})
    assert_google_error(gat(api, target), 400, "FAILED_PRECONDITION")
    api.ok("POST", f"/v1/projects/{PROJECT}/serviceAccounts/{target}:enable", {})
    assert gat(api, target).status_code == 200


def test_delegate_losing_its_grant_breaks_the_chain_on_the_next_request(api: Api, target: str) -> None:
    delegate = api.create_sa("memo-delegate")["email"]
    api.grant_owner_token_creator(delegate)
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target}", TOKEN_CREATOR, f"serviceAccount:{delegate}")
    chain = [f"projects/-/serviceAccounts/{delegate}"]
    assert gat(api, target, delegates=chain).status_code == 200
    assert gat(api, target, delegates=chain).status_code == 200
    set_bindings(api, f"/v1/projects/-/serviceAccounts/{target}", [])
    assert_google_error(gat(api, target, delegates=chain), 403, "PERMISSION_DENIED")
    # The direct question was never granted, remembered chain or not.
    assert_google_error(gat(api, target), 403, "PERMISSION_DENIED")


def test_revoked_and_disabled_callers_are_refused_on_the_next_request(api: Api, target: str) -> None:
    caller = api.create_sa("memo-caller")["email"]
    api.grant_owner_token_creator(caller)
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target}", TOKEN_CREATOR, f"serviceAccount:{caller}")
    revoked = api.sa_token(caller)["accessToken"]
    kept = api.sa_token(caller)["accessToken"]
    assert gat(api, target, token=revoked).status_code == 200
    assert api.client.post("/revoke", data={"token": revoked}).status_code == 200
    assert_google_error(gat(api, target, token=revoked), 401, "UNAUTHENTICATED")
    assert gat(api, target, token=kept).status_code == 200
    api.ok("POST", f"/v1/projects/{PROJECT}/serviceAccounts/{caller}:disable", {})
    assert_google_error(gat(api, target, token=kept), 401, "UNAUTHENTICATED")


def test_conditional_grants_are_evaluated_at_each_request(api: Api, target: str) -> None:
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(api.clock.now() + 60))
    set_bindings(api, f"/v1/projects/-/serviceAccounts/{target}", [{
        "role": TOKEN_CREATOR, "members": [OWNER],
        "condition": {"title": "for a minute", "expression": f'request.time < timestamp("{expiry}")'}}])
    assert gat(api, target).status_code == 200
    assert gat(api, target).status_code == 200
    api.clock.advance(61)
    assert_google_error(gat(api, target), 403, "PERMISSION_DENIED")


def test_a_remembered_grant_is_audited_like_a_fresh_one(api: Api, target: str) -> None:
    delegate = api.create_sa("memo-delegate")["email"]
    api.grant_owner_token_creator(delegate)
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target}", TOKEN_CREATOR, f"serviceAccount:{delegate}")
    chain = [f"projects/-/serviceAccounts/{delegate}"]
    for _ in range(2):
        assert gat(api, target, delegates=chain).status_code == 200
    entries = api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"]
    fresh, remembered = [e["protoPayload"] for e in entries if e["protoPayload"]["methodName"]
                         == "GenerateAccessToken"][-2:]
    for field in ("resourceName", "authorizationInfo", "authenticationInfo", "request"):
        assert fresh[field] == remembered[field], field
    assert [a["permission"] for a in remembered["authorizationInfo"]] == [
        "iam.serviceAccounts.implicitDelegation", "iam.serviceAccounts.getAccessToken"]
    assert remembered["authenticationInfo"]["serviceAccountDelegationInfo"] == [
        {"firstPartyPrincipal": {"principalEmail": delegate}}]


def test_a_change_made_by_another_process_is_seen_on_the_next_request(api: Api, target: str, inproc: Any) -> None:
    """Two processes on one database (``serve --workers 2``): each remembers, each sees the other's change."""
    api.grant_owner_token_creator(target)
    kl: Keyless = inproc.keyless
    store = CachingStore(SqliteStore(kl.store.path))
    inproc.run(store.open())
    other = Keyless(store, inproc.clock, kl.settings, kl.core.master)
    try:
        check_each_sees_the_other(api, target, other)
    finally:
        inproc.run(store.close())


def check_each_sees_the_other(api: Api, target: str, other: Keyless) -> None:
    with NoServerErrors(build_app(other), base_url=BASE, raise_server_exceptions=False) as other_client:
        def other_gat() -> int:
            return other_client.post(gat_path(target), json={"scope": [CLOUD]},
                                     headers={"Authorization": f"Bearer {api.owner_token}"}).status_code
        assert other_gat() == 200
        assert other_gat() == 200
        set_bindings(api, f"/v1/projects/-/serviceAccounts/{target}", [])
        assert other_gat() == 403
        api.grant_owner_token_creator(target)
        assert other_gat() == 200


def test_a_remembered_caller_is_refused_once_its_token_expires(api: Api, target: str) -> None:
    caller = api.create_sa("memo-caller")["email"]
    api.grant_owner_token_creator(caller)
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target}", TOKEN_CREATOR, f"serviceAccount:{caller}")
    token = api.sa_token(caller, lifetime="300s")["accessToken"]
    for _ in range(2):  # the second answer comes from the caller remembered by its Authorization header
        assert gat(api, target, token=token).status_code == 200
    api.clock.advance(299)
    assert gat(api, target, token=token).status_code == 200
    api.clock.advance(1)
    r = gat(api, target, token=token)
    assert_google_error(r, 401, "UNAUTHENTICATED")
    assert "ACCESS_TOKEN_EXPIRED" in r.text


def sign_blob_key(api: Api, email: str) -> str:
    out = api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}:signBlob", {"payload": "aGVsbG8="})
    key_id: str = out["keyId"]
    return key_id


def test_a_disabled_signing_key_stops_signing_on_the_next_request(api: Api, target: str) -> None:
    api.grant_owner_token_creator(target)
    first = sign_blob_key(api, target)
    assert sign_blob_key(api, target) == first  # remembered as the current key
    api.ok("POST", f"/v1/projects/-/serviceAccounts/{target}/keys/{first}:disable", {})
    second = sign_blob_key(api, target)
    assert second != first
    assert sign_blob_key(api, target) == second
