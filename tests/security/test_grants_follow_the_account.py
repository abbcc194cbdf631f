"""Grants follow a service account, not its email: deleting an account turns its group memberships, the
metadata attachment and org-policy ``allowedValues`` into ``deleted:serviceAccount:EMAIL?uid=UNIQUE_ID``, as
its policy bindings already were, so an account re-created with the same id inherits none of them; undeleting
restores them. In process, on a frozen clock."""

from __future__ import annotations

from typing import Any

from keyless.metadata.app import build_metadata_app
from tests.conftest import InProcess
from tests.http.helpers import CLOUD, PROJECT, TOKEN_CREATOR, Api, NoServerErrors, assert_google_error

ACCOUNTS = "/v1/projects/-/serviceAccounts"
LIFETIME_POLICY = "iam.allowServiceAccountCredentialLifetimeExtension"


def _user(api: Api, email: str) -> dict[str, Any]:
    creds: dict[str, Any] = api.ok("POST", "/keyless/v1/users", {"email": email})["credentials"]
    return creds


def _user_token(api: Api, creds: dict[str, Any]) -> str:
    r = api.refresh_token_grant(creds)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _deleted(account: dict[str, Any]) -> str:
    return f"deleted:serviceAccount:{account['email']}?uid={account['uniqueId']}"


def test_a_recreated_account_does_not_inherit_the_group_grants_of_the_deleted_one(api: Api) -> None:
    # Mallory administers her own project; the target lives in another project where she has no role.
    api.ok("POST", "/keyless/v1/projects", {"projectId": "mallory-proj"})
    mallory = _user(api, "mallory@example.com")
    for role in ("roles/iam.serviceAccountAdmin", TOKEN_CREATOR):
        api.add_binding("/v1/projects/mallory-proj", role, "user:mallory@example.com")
    target = api.create_sa("payroll-target")
    worker = api.create_sa("worker", project="mallory-proj")
    api.ok("PUT", "/keyless/v1/groups/payroll@example.com", {"members": [f"serviceAccount:{worker['email']}"]})
    api.add_binding(f"{ACCOUNTS}/{target['email']}", TOKEN_CREATOR, "group:payroll@example.com")

    mallory_token = _user_token(api, mallory)
    api.ok("DELETE", f"{ACCOUNTS}/{worker['email']}", token=mallory_token)

    again = api.ok("POST", "/v1/projects/mallory-proj/serviceAccounts", {"accountId": "worker"}, token=mallory_token)
    assert again["email"] == worker["email"] and again["uniqueId"] != worker["uniqueId"]
    worker_token = api.ok("POST", f"{ACCOUNTS}/{again['email']}:generateAccessToken", {"scope": [CLOUD]},
                          token=mallory_token)["accessToken"]
    r = api.call("POST", f"{ACCOUNTS}/{target['email']}:generateAccessToken", {"scope": [CLOUD]},
                 token=worker_token)
    assert_google_error(r, 403, "PERMISSION_DENIED")
    assert api.ok("GET", "/keyless/v1/groups/payroll@example.com")["members"] == [_deleted(worker)]


def test_undelete_restores_the_group_membership(api: Api) -> None:
    worker = api.create_sa("grouped-bot")
    api.ok("PUT", "/keyless/v1/groups/team@example.com",
           {"members": [f"serviceAccount:{worker['email']}", "user:bob@example.com"]})
    api.ok("DELETE", f"{ACCOUNTS}/{worker['email']}")
    assert api.ok("GET", "/keyless/v1/groups/team@example.com")["members"] == sorted(
        [_deleted(worker), "user:bob@example.com"])
    # The group as read can be written back unchanged (a read-modify-write keeps the tombstone).
    members = api.ok("GET", "/keyless/v1/groups/team@example.com")["members"]
    api.ok("PUT", "/keyless/v1/groups/team@example.com", {"members": members})

    api.ok("POST", f"{ACCOUNTS}/{worker['uniqueId']}:undelete", {})
    assert api.ok("GET", "/keyless/v1/groups/team@example.com")["members"] == sorted(
        [f"serviceAccount:{worker['email']}", "user:bob@example.com"])


def _metadata_token(inproc: InProcess) -> Any:
    with NoServerErrors(build_metadata_app(inproc.keyless), base_url="http://metadata.google.internal") as client:
        return client.get("/computeMetadata/v1/instance/service-accounts/default/token",
                          headers={"Metadata-Flavor": "Google"})


def test_a_recreated_account_is_not_served_by_the_metadata_server(api: Api, inproc: InProcess) -> None:
    first = api.create_sa("vm-bot")
    api.ok("PUT", "/keyless/v1/metadata", {"serviceAccount": first["email"]})
    assert _metadata_token(inproc).status_code == 200

    api.ok("DELETE", f"{ACCOUNTS}/{first['email']}")
    api.create_sa("vm-bot")
    assert _metadata_token(inproc).status_code == 404
    assert api.ok("GET", "/keyless/v1/metadata")["serviceAccount"] == _deleted(first)


def test_undelete_restores_the_metadata_attachment(api: Api, inproc: InProcess) -> None:
    first = api.create_sa("vm-bot")
    api.ok("PUT", "/keyless/v1/metadata", {"serviceAccount": first["email"]})
    api.ok("DELETE", f"{ACCOUNTS}/{first['email']}")
    assert _metadata_token(inproc).status_code == 404
    api.ok("POST", f"{ACCOUNTS}/{first['uniqueId']}:undelete", {})
    assert api.ok("GET", "/keyless/v1/metadata")["serviceAccount"] == first["email"]
    assert _metadata_token(inproc).status_code == 200


def _allow_extension(api: Api, *values: str) -> None:
    api.ok("PATCH", f"/v2/projects/{PROJECT}/policies/{LIFETIME_POLICY}",
           {"spec": {"rules": [{"values": {"allowedValues": list(values)}}]}})


def _allowed(api: Api) -> list[str]:
    policy = api.ok("GET", f"/v2/projects/{PROJECT}/policies/{LIFETIME_POLICY}")
    values: list[str] = policy["spec"]["rules"][0]["values"]["allowedValues"]
    return values


def test_a_recreated_account_is_not_allowed_long_lived_tokens(api: Api) -> None:
    first = api.create_sa("long-bot")
    bare = api.create_sa("bare-bot")
    _allow_extension(api, first["email"], f"serviceAccount:{bare['email']}", "other@example.com")
    api.grant_owner_token_creator(first["email"])
    assert api.sa_token(first["email"], lifetime="7200s")["accessToken"]

    for account in (first, bare):
        api.ok("DELETE", f"{ACCOUNTS}/{account['email']}")
    second = api.create_sa("long-bot")
    api.grant_owner_token_creator(second["email"])
    r = api.call("POST", f"{ACCOUNTS}/{second['email']}:generateAccessToken", {"scope": [CLOUD],
                                                                               "lifetime": "7200s"})
    assert_google_error(r, 400, "INVALID_ARGUMENT")
    assert _allowed(api) == [_deleted(first), _deleted(bare), "other@example.com"]

    api.ok("DELETE", f"{ACCOUNTS}/{second['email']}")
    api.ok("POST", f"{ACCOUNTS}/{first['uniqueId']}:undelete", {})
    api.ok("POST", f"{ACCOUNTS}/{bare['uniqueId']}:undelete", {})
    assert _allowed(api) == [first["email"], bare["email"], "other@example.com"]
    assert api.sa_token(first["email"], lifetime="7200s")["accessToken"]
