"""IAM v1 service accounts over HTTP: create, get, list with paging, patch, delete, undelete, disable, enable."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.helpers import CLOUD, PROJECT, Api, assert_google_error

COLLECTION = f"/v1/projects/{PROJECT}/serviceAccounts"


def email_of(account_id: str) -> str:
    return f"{account_id}@{PROJECT}.iam.gserviceaccount.com"


# ---------------------------------------------------------------- create / get


def test_create_returns_the_google_shape(api: Api) -> None:
    created = api.create_sa("builder-bot", "Builder")
    assert created["email"] == email_of("builder-bot")
    assert created["name"] == f"projects/{PROJECT}/serviceAccounts/{email_of('builder-bot')}"
    assert created["projectId"] == PROJECT
    assert created["displayName"] == "Builder"
    assert created["uniqueId"].isdigit() and len(created["uniqueId"]) == 21
    assert created["oauth2ClientId"] == created["uniqueId"]
    assert created["etag"]
    assert "disabled" not in created


def test_create_with_description(api: Api) -> None:
    created = api.ok("POST", COLLECTION, {"accountId": "described-bot",
                                          "serviceAccount": {"displayName": "D", "description": "does things"}})
    assert created["description"] == "does things"
    assert api.ok("GET", f"{COLLECTION}/{created['email']}")["description"] == "does things"


def test_create_twice_is_409(api: Api) -> None:
    api.create_sa("twice-bot")
    assert_google_error(api.call("POST", COLLECTION, {"accountId": "twice-bot"}), 409, "ALREADY_EXISTS")


@pytest.mark.parametrize("account_id", ["short", "UpperCase1", "1starts-digit", "ends-with-", "under_score",
                                        "a" * 31, ""])
def test_create_with_invalid_account_id_is_400(api: Api, account_id: str) -> None:
    assert_google_error(api.call("POST", COLLECTION, {"accountId": account_id}), 400, "INVALID_ARGUMENT")


def test_create_without_account_id_is_400(api: Api) -> None:
    assert_google_error(api.call("POST", COLLECTION, {"serviceAccount": {"displayName": "x"}}), 400,
                        "INVALID_ARGUMENT")


def test_create_with_too_long_display_name_is_400(api: Api) -> None:
    r = api.call("POST", COLLECTION, {"accountId": "long-name-bot", "serviceAccount": {"displayName": "x" * 101}})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_create_in_unknown_project_is_404(api: Api) -> None:
    r = api.call("POST", "/v1/projects/no-such-project/serviceAccounts", {"accountId": "orphan-bot"})
    assert_google_error(r, 404, "NOT_FOUND")


def test_get_by_email_unique_id_and_wildcard(api: Api) -> None:
    created = api.create_sa("lookup-bot", "Lookup")
    for ref in (created["email"], created["uniqueId"], created["email"].upper()):
        for project in (PROJECT, "-"):
            got = api.ok("GET", f"/v1/projects/{project}/serviceAccounts/{ref}")
            assert got == created


def test_get_unknown_account_in_a_project_is_404(api: Api) -> None:
    assert_google_error(api.call("GET", f"{COLLECTION}/{email_of('ghost-bot')}"), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", f"{COLLECTION}/123456789012345678901"), 404, "NOT_FOUND")


def test_get_with_malformed_name_is_400(api: Api) -> None:
    assert_google_error(api.call("GET", f"{COLLECTION}/not-an-email"), 400, "INVALID_ARGUMENT")


# ---------------------------------------------------------------- list


def test_list_pages_one_at_a_time(api: Api) -> None:
    ids = ["page-bot-c", "page-bot-a", "page-bot-b", "page-bot-d"]
    for account_id in ids:
        api.create_sa(account_id)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"pageSize": "1"}
        if token:
            params["pageToken"] = token
        page = api.ok("GET", COLLECTION, params=params)
        pages += 1
        assert len(page["accounts"]) == 1
        seen.extend(a["email"] for a in page["accounts"])
        token = page.get("nextPageToken")
        if not token:
            break
        assert pages < 10, "paging does not terminate"
    assert pages == len(ids)
    assert seen == sorted(email_of(a) for a in ids)


def test_list_page_size_two_and_default(api: Api) -> None:
    for i in range(3):
        api.create_sa(f"list-bot-{i}")
    first = api.ok("GET", COLLECTION, params={"pageSize": "2"})
    assert len(first["accounts"]) == 2 and first["nextPageToken"]
    second = api.ok("GET", COLLECTION, params={"pageSize": "2", "pageToken": first["nextPageToken"]})
    assert len(second["accounts"]) == 1
    assert "nextPageToken" not in second
    everything = api.ok("GET", COLLECTION)
    assert [a["email"] for a in everything["accounts"]] == [email_of(f"list-bot-{i}") for i in range(3)]
    assert "nextPageToken" not in everything
    assert everything["accounts"][0] == api.ok("GET", f"{COLLECTION}/{email_of('list-bot-0')}")


def test_list_of_an_empty_project_and_unknown_project(api: Api) -> None:
    assert api.ok("GET", COLLECTION) == {"accounts": []}
    assert_google_error(api.call("GET", "/v1/projects/no-such-project/serviceAccounts"), 404, "NOT_FOUND")


# ---------------------------------------------------------------- patch


def test_patch_with_update_mask(api: Api) -> None:
    created = api.ok("POST", COLLECTION, {"accountId": "patch-bot",
                                          "serviceAccount": {"displayName": "Old", "description": "old text"}})
    path = f"/v1/projects/-/serviceAccounts/{created['email']}"
    patched = api.ok("PATCH", path, {"serviceAccount": {"displayName": "New", "description": "ignored"},
                                     "updateMask": "displayName"})
    assert patched["displayName"] == "New"
    assert patched["description"] == "old text"
    patched = api.ok("PATCH", path, {"serviceAccount": {"description": "new text"}, "updateMask": "description"})
    assert patched["displayName"] == "New"
    assert patched["description"] == "new text"
    both = api.ok("PATCH", path, {"serviceAccount": {"displayName": "Both", "description": ""},
                                  "updateMask": "displayName,description"})
    assert both["displayName"] == "Both"
    assert "description" not in both
    assert api.ok("GET", path) == both
    assert both["uniqueId"] == created["uniqueId"] and both["email"] == created["email"]


@pytest.mark.parametrize("body", [
    {"serviceAccount": {"displayName": "x"}},
    {"serviceAccount": {"displayName": "x"}, "updateMask": ""},
    {"serviceAccount": {"email": "x@y.com"}, "updateMask": "email"},
    {"serviceAccount": {"displayName": "x"}, "updateMask": "displayName,uniqueId"},
    {"serviceAccount": {"displayName": "x" * 101}, "updateMask": "displayName"},
])
def test_bad_patches_are_400(api: Api, body: dict[str, Any]) -> None:
    created = api.create_sa("bad-patch-bot", "Keep")
    path = f"/v1/projects/-/serviceAccounts/{created['email']}"
    assert_google_error(api.call("PATCH", path, body), 400, "INVALID_ARGUMENT")
    assert api.ok("GET", path)["displayName"] == "Keep"


# ---------------------------------------------------------------- delete / undelete


def test_delete_and_undelete_by_unique_id(api: Api) -> None:
    created = api.create_sa("phoenix-bot", "Phoenix")
    email, uid = created["email"], created["uniqueId"]
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{email}")

    assert api.ok("DELETE", f"/v1/projects/-/serviceAccounts/{email}") == {}
    assert_google_error(api.call("GET", f"{COLLECTION}/{email}"), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", f"{COLLECTION}/{uid}"), 404, "NOT_FOUND")
    assert email not in [a["email"] for a in api.ok("GET", COLLECTION)["accounts"]]
    policy = api.ok("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {})
    viewers = next(b["members"] for b in policy["bindings"] if b["role"] == "roles/viewer")
    assert viewers == [f"deleted:serviceAccount:{email}?uid={uid}"]

    # Undelete needs the unique id.
    assert_google_error(api.call("POST", f"/v1/projects/-/serviceAccounts/{email}:undelete", {}), 400,
                        "INVALID_ARGUMENT")
    restored = api.ok("POST", f"/v1/projects/-/serviceAccounts/{uid}:undelete", {})
    assert restored["restoredAccount"]["email"] == email
    assert restored["restoredAccount"]["uniqueId"] == uid
    assert api.ok("GET", f"{COLLECTION}/{email}")["displayName"] == "Phoenix"
    policy = api.ok("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {})
    viewers = next(b["members"] for b in policy["bindings"] if b["role"] == "roles/viewer")
    assert viewers == [f"serviceAccount:{email}"]


def test_undelete_of_an_active_account_is_400(api: Api) -> None:
    created = api.create_sa("alive-bot")
    r = api.call("POST", f"/v1/projects/-/serviceAccounts/{created['uniqueId']}:undelete", {})
    assert_google_error(r, 400, "FAILED_PRECONDITION")


def test_undelete_of_unknown_id_is_404_in_its_project(api: Api) -> None:
    r = api.call("POST", f"/v1/projects/{PROJECT}/serviceAccounts/123456789012345678901:undelete", {})
    assert_google_error(r, 404, "NOT_FOUND")
    # Through the wildcard the project is unknown: 403, as Google documents for every verb.
    r = api.call("POST", "/v1/projects/-/serviceAccounts/123456789012345678901:undelete", {})
    assert_google_error(r, 403, "PERMISSION_DENIED")


def test_undelete_after_thirty_days_is_refused(api: Api) -> None:
    created = api.create_sa("too-late-bot")
    api.ok("DELETE", f"{COLLECTION}/{created['email']}")
    api.clock.advance(31 * 86400)
    r = api.call("POST", f"/v1/projects/-/serviceAccounts/{created['uniqueId']}:undelete", {})
    assert_google_error(r, 404, "NOT_FOUND")


def test_delete_then_recreate_gets_a_new_unique_id(api: Api) -> None:
    first = api.create_sa("reborn-bot")
    api.ok("DELETE", f"{COLLECTION}/{first['email']}")
    second = api.create_sa("reborn-bot")
    assert second["email"] == first["email"]
    assert second["uniqueId"] != first["uniqueId"]
    r = api.call("POST", f"/v1/projects/-/serviceAccounts/{first['uniqueId']}:undelete", {})
    assert_google_error(r, 400, "FAILED_PRECONDITION")


def test_delete_twice_is_404(api: Api) -> None:
    created = api.create_sa("gone-bot")
    api.ok("DELETE", f"{COLLECTION}/{created['email']}")
    assert_google_error(api.call("DELETE", f"{COLLECTION}/{created['email']}"), 404, "NOT_FOUND")


# ---------------------------------------------------------------- disable / enable


def test_disable_and_enable(api: Api, sa: dict[str, Any]) -> None:
    path = f"/v1/projects/-/serviceAccounts/{sa['email']}"
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{sa['email']}")
    sa_token = api.sa_token(sa["email"])["accessToken"]
    assert api.call("GET", COLLECTION, token=sa_token).status_code == 200

    assert api.ok("POST", f"{path}:disable", {}) == {}
    assert api.ok("GET", path)["disabled"] is True
    # A disabled account's tokens stop working and it cannot be impersonated.
    assert_google_error(api.call("GET", COLLECTION, token=sa_token), 401, "UNAUTHENTICATED")
    assert_google_error(api.call("POST", f"{path}:generateAccessToken", {"scope": [CLOUD]}), 400,
                        "FAILED_PRECONDITION")
    assert_google_error(api.call("POST", f"{path}:signBlob", {"payload": "aGk="}), 400, "FAILED_PRECONDITION")

    assert api.ok("POST", f"{path}:enable", {}) == {}
    assert "disabled" not in api.ok("GET", path)
    assert api.call("GET", COLLECTION, token=sa_token).status_code == 200
    assert api.sa_token(sa["email"])["accessToken"]


def test_disable_and_enable_are_idempotent_and_take_unique_ids(api: Api) -> None:
    created = api.create_sa("toggle-bot")
    path = f"/v1/projects/{PROJECT}/serviceAccounts/{created['uniqueId']}"
    api.ok("POST", f"{path}:disable", {})
    api.ok("POST", f"{path}:disable", {})
    assert api.ok("GET", path)["disabled"] is True
    api.ok("POST", f"{path}:enable", {})
    api.ok("POST", f"{path}:enable", {})
    assert "disabled" not in api.ok("GET", path)


def test_disable_needs_post(api: Api) -> None:
    created = api.create_sa("method-bot")
    r = api.call("GET", f"/v1/projects/-/serviceAccounts/{created['email']}:disable")
    assert_google_error(r, 405, "UNIMPLEMENTED")


# ---------------------------------------------------------------- permissions


def test_a_service_account_without_roles_is_denied(api: Api, sa: dict[str, Any]) -> None:
    token = api.sa_token(sa["email"])["accessToken"]
    error = assert_google_error(api.call("GET", COLLECTION, token=token), 403, "PERMISSION_DENIED")
    assert "iam.serviceAccounts.list" in error["message"]
    error = assert_google_error(api.call("POST", COLLECTION, {"accountId": "sneaky-bot"}, token=token), 403,
                                "PERMISSION_DENIED")
    assert "iam.serviceAccounts.create" in error["message"]


def test_recreated_account_inherits_no_bindings(api: Api) -> None:
    first = api.create_sa("heir-bot")
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{first['email']}")
    api.ok("DELETE", f"{COLLECTION}/{first['email']}")
    second = api.create_sa("heir-bot")
    api.grant_owner_token_creator(second["email"])
    token = api.sa_token(second["email"])["accessToken"]
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=token), 403, "PERMISSION_DENIED")


def test_deleting_an_account_ends_its_tokens(api: Api, sa: dict[str, Any]) -> None:
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{sa['email']}")
    token = api.sa_token(sa["email"])["accessToken"]
    assert api.call("GET", f"/v1/projects/{PROJECT}", token=token).status_code == 200
    api.ok("DELETE", f"{COLLECTION}/{sa['email']}")
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=token), 401, "UNAUTHENTICATED")
    r = api.call("POST", f"/v1/projects/-/serviceAccounts/{sa['email']}:generateAccessToken", {"scope": [CLOUD]})
    assert_google_error(r, 403, "PERMISSION_DENIED")


def test_a_token_minted_in_the_second_of_an_undelete_works(api: Api, sa: dict[str, Any]) -> None:
    """The revocation cut-off of a delete is kept to the millisecond: a token minted after the undelete, in the
    same second as the delete, works; one minted before the delete stays refused."""
    api.clock.set(1_800_000_000.2)
    before = api.sa_token(sa["email"])["accessToken"]
    api.clock.advance(0.3)
    api.ok("DELETE", f"/v1/projects/-/serviceAccounts/{sa['email']}")
    api.clock.advance(0.2)
    api.ok("POST", f"/v1/projects/-/serviceAccounts/{sa['uniqueId']}:undelete", {})
    after = api.sa_token(sa["email"])["accessToken"]
    assert api.call("GET", f"/tokeninfo?access_token={after}").status_code == 200
    assert api.call("GET", f"/tokeninfo?access_token={before}").status_code == 400


def test_a_token_minted_in_the_second_of_an_enable_works(api: Api, sa: dict[str, Any]) -> None:
    api.clock.set(1_800_000_000.2)
    path = f"/v1/projects/-/serviceAccounts/{sa['email']}"
    api.ok("POST", f"{path}:disable", {})
    api.clock.advance(0.3)
    api.ok("POST", f"{path}:enable", {})
    token = api.sa_token(sa["email"])["accessToken"]
    assert api.call("GET", f"/tokeninfo?access_token={token}").status_code == 200
