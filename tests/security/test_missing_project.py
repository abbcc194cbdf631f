"""IAM v1 paths (``/v1/projects/{project}/serviceAccounts...``) naming a project that does not exist, or one the
account is not in, answer 404 NOT_FOUND in Google's shape, and do nothing: no list, no account, no key, no
signature (IAM v1's ``signBlob``/``signJwt`` signed with the account whatever project the path named)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.http.helpers import PROJECT, Api, assert_google_error

MISSING = "no-such-project"
OTHER = "other-project"


@pytest.fixture
def account(api: Api) -> dict[str, Any]:
    created = api.create_sa("legacy-target")
    api.grant_owner_token_creator(created["email"])
    api.ok("POST", "/keyless/v1/projects", {"projectId": OTHER})
    return created


def calls(ident: str) -> list[tuple[str, str, Any]]:
    blob = base64.b64encode(b"hello").decode()
    return [
        ("GET", "", None),
        ("PATCH", "", {"serviceAccount": {"displayName": "x"}, "updateMask": "displayName"}),
        ("DELETE", "", None),
        ("GET", "/keys", None),
        ("POST", "/keys", {}),
        ("GET", "/keys/0123456789abcdef0123456789abcdef01234567", None),
        ("POST", ":getIamPolicy", {}),
        ("POST", ":setIamPolicy", {"policy": {"bindings": []}}),
        ("POST", ":testIamPermissions", {"permissions": ["iam.serviceAccounts.get"]}),
        ("POST", ":disable", {}),
        ("POST", ":enable", {}),
        ("GET", "/allowedLocations", None),
        ("POST", ":signBlob", {"bytesToSign": blob}),
        ("POST", ":signBlob", {"payload": blob}),
        ("POST", ":signJwt", {"payload": '{"sub": "x"}'}),
    ]


@pytest.mark.parametrize("project", [MISSING, OTHER])
@pytest.mark.parametrize("by", ["email", "uniqueId"])
def test_an_account_under_the_wrong_project_is_404(api: Api, account: dict[str, Any], project: str, by: str) -> None:
    before = api.ok("GET", f"/v1/projects/-/serviceAccounts/{account['email']}")
    keys = api.ok("GET", f"/v1/projects/-/serviceAccounts/{account['email']}/keys")
    for method, suffix, body in calls(account[by]):
        r = api.call(method, f"/v1/projects/{project}/serviceAccounts/{account[by]}{suffix}", body)
        assert_google_error(r, 404, "NOT_FOUND")
    assert api.ok("GET", f"/v1/projects/-/serviceAccounts/{account['email']}") == before
    assert api.ok("GET", f"/v1/projects/-/serviceAccounts/{account['email']}/keys") == keys


def test_undelete_under_the_wrong_project_is_404(api: Api, account: dict[str, Any]) -> None:
    api.ok("DELETE", f"/v1/projects/-/serviceAccounts/{account['email']}")
    for project in (MISSING, OTHER):
        r = api.call("POST", f"/v1/projects/{project}/serviceAccounts/{account['uniqueId']}:undelete", {})
        assert_google_error(r, 404, "NOT_FOUND")
    restored = api.ok("POST", f"/v1/projects/{PROJECT}/serviceAccounts/{account['uniqueId']}:undelete", {})
    assert restored["restoredAccount"]["email"] == account["email"]


def test_list_and_create_in_a_missing_project_are_404(api: Api) -> None:
    assert_google_error(api.call("GET", f"/v1/projects/{MISSING}/serviceAccounts"), 404, "NOT_FOUND")
    assert_google_error(api.call("POST", f"/v1/projects/{MISSING}/serviceAccounts",
                                 {"accountId": "would-be-made"}), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", f"/v1/projects/{MISSING}/serviceAccounts/would-be-made@{MISSING}"
                                        ".iam.gserviceaccount.com"), 404, "NOT_FOUND")


def test_the_right_project_and_the_wildcard_still_work(api: Api, account: dict[str, Any]) -> None:
    blob = base64.b64encode(b"hello").decode()
    for project in (PROJECT, "-"):
        path = f"/v1/projects/{project}/serviceAccounts/{account['email']}"
        assert api.ok("GET", path)["email"] == account["email"]
        assert api.ok("POST", f"{path}:signBlob", {"bytesToSign" if project != "-" else "payload": blob})["keyId"]
    number = api.ok("GET", f"/v1/projects/{PROJECT}")["projectNumber"]
    path = f"/v1/projects/{number}/serviceAccounts/{account['email']}"
    assert api.ok("POST", f"{path}:signJwt", {"payload": '{"sub": "x"}'})["signedJwt"]
