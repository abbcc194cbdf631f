"""Service Usage v1 over HTTP: what gcloud's `services enable|disable|list` send and expect, who may call them, and
bad input (a Google-shaped 400 that changes nothing)."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.domain.services import CATALOGUE, DEFAULT_ENABLED
from tests.http.helpers import Api, assert_google_error

NEW = "usage-project"
IAM = "iam.googleapis.com"
CREDENTIALS = "iamcredentials.googleapis.com"


@pytest.fixture
def project(api: Api) -> dict[str, Any]:
    created: dict[str, Any] = api.ok("POST", "/keyless/v1/projects", {"projectId": NEW})
    return created


def enabled(api: Api, project: str = NEW, **kwargs: Any) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        params = {"filter": "state:ENABLED", "pageSize": "200", **({"pageToken": token} if token else {})}
        page = api.ok("GET", f"/v1/projects/{project}/services", params=params, **kwargs)
        names += [s["config"]["name"] for s in page.get("services", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return names


def user(api: Api, email: str, role: str | None, project: str = NEW) -> str:
    """A new user's access token, holding ``role`` on ``project``."""
    creds = api.ok("POST", "/keyless/v1/users", {"email": email})["credentials"]
    if role:
        api.add_binding(f"/v1/projects/{project}", role, f"user:{email}")
    r = api.refresh_token_grant(creds)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_a_new_project_has_googles_default_services_and_not_the_iam_apis(api: Api, project: dict[str, Any]) -> None:
    assert enabled(api) == sorted(DEFAULT_ENABLED)
    assert IAM not in enabled(api) and CREDENTIALS not in enabled(api)


def test_enable_answers_a_done_operation_with_its_response(api: Api, project: dict[str, Any]) -> None:
    number = project["projectNumber"]
    op = api.ok("POST", f"/v1/projects/{NEW}/services/{CREDENTIALS}:enable", {})
    assert op["done"] is True and op["name"].startswith(f"operations/acf.p2-{number}-")
    assert "error" not in op
    assert op["response"] == {
        "@type": "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
        "service": {"name": f"projects/{number}/services/{CREDENTIALS}", "parent": f"projects/{number}",
                    "config": {"name": CREDENTIALS, "title": "IAM Service Account Credentials API"},
                    "state": "ENABLED"}}
    assert op["metadata"]["resourceNames"] == [f"services/{CREDENTIALS}/projectSettings/{number}"]
    # gcloud polls operations.get (`services operations describe`): answered again, done.
    assert api.ok("GET", f"/v1/{op['name']}") == op
    assert api.ok("GET", f"/v1/projects/{NEW}/services/{CREDENTIALS}")["state"] == "ENABLED"
    assert CREDENTIALS in enabled(api)
    # Enabling again is no change, and the same answer.
    assert api.ok("POST", f"/v1/projects/{NEW}/services/{CREDENTIALS}:enable", {})["response"] == op["response"]


def test_batch_enable_by_project_number_and_disable(api: Api, project: dict[str, Any]) -> None:
    number = project["projectNumber"]
    op = api.ok("POST", f"/v1/projects/{number}/services:batchEnable", {"serviceIds": [IAM, CREDENTIALS, IAM]})
    assert op["done"] is True
    assert op["response"]["@type"].endswith("BatchEnableServicesResponse")
    assert [s["config"]["name"] for s in op["response"]["services"]] == [IAM, CREDENTIALS]
    assert {IAM, CREDENTIALS} <= set(enabled(api))
    off = api.ok("POST", f"/v1/projects/{NEW}/services/{IAM}:disable",
                 {"disableDependentServices": False, "checkIfServiceHasUsage": "CHECK"})
    assert off["done"] is True and off["response"]["service"]["state"] == "DISABLED"
    assert off["response"]["@type"].endswith("DisableServiceResponse")
    assert IAM not in enabled(api) and CREDENTIALS in enabled(api)
    assert api.ok("GET", f"/v1/projects/{number}/services/{IAM}")["state"] == "DISABLED"
    # Disabling a service that is not enabled is no change either.
    assert api.ok("POST", f"/v1/projects/{NEW}/services/{IAM}:disable", {})["done"] is True


def test_list_filters_and_pages(api: Api, project: dict[str, Any]) -> None:
    api.ok("POST", f"/v1/projects/{NEW}/services/storage-transfer.googleapis.com:enable", {})
    available = []
    token = ""
    while True:
        page = api.ok("GET", f"/v1/projects/{NEW}/services", params={"pageSize": 3, "pageToken": token})
        assert len(page["services"]) <= 3
        available += [s["config"]["name"] for s in page["services"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert available == sorted(set(CATALOGUE) | {"storage-transfer.googleapis.com"})
    disabled = api.ok("GET", f"/v1/projects/{NEW}/services", params={"filter": "state:DISABLED", "pageSize": 200})
    assert {s["config"]["name"] for s in disabled["services"]} == set(CATALOGUE) - set(enabled(api))
    assert all(s["state"] == "DISABLED" for s in disabled["services"])


@pytest.mark.parametrize("service", ["iam", "IAM.googleapis.com", "foo.example.com", "a" * 120 + ".googleapis.com",
                                     ".googleapis.com", "iam.googleapis.com.", "i am.googleapis.com"])
def test_a_malformed_service_name_is_400_and_changes_nothing(api: Api, project: dict[str, Any], service: str) -> None:
    before = enabled(api)
    for method, path, body in (("POST", f"/v1/projects/{NEW}/services/{service}:enable", {}),
                               ("POST", f"/v1/projects/{NEW}/services:batchEnable", {"serviceIds": [IAM, service]}),
                               ("POST", f"/v1/projects/{NEW}/services/{service}:disable", {}),
                               ("GET", f"/v1/projects/{NEW}/services/{service}", None)):
        assert_google_error(api.call(method, path, body), 400, "INVALID_ARGUMENT")
    assert enabled(api) == before


@pytest.mark.parametrize(("path", "body"), [
    ("services:batchEnable", {"serviceIds": []}),
    ("services:batchEnable", {"serviceIds": "iam.googleapis.com"}),
    ("services:batchEnable", {"serviceIds": [f"s{i}.googleapis.com" for i in range(21)]}),
    ("services:batchEnable", {"serviceIds": [IAM], "force": True}),
    ("services:batchEnable", {"serviceIds": [3]}),
    (f"services/{IAM}:enable", {"force": True}),
    (f"services/{CREDENTIALS}:disable", {"disableDependentServices": "yes"}),
    (f"services/{CREDENTIALS}:disable", {"checkIfServiceHasUsage": "MAYBE"}),
    (f"services/{CREDENTIALS}:disable", {"unknown": 1}),
])
def test_bad_requests_are_400_and_change_nothing(api: Api, project: dict[str, Any], path: str,
                                                 body: dict[str, Any]) -> None:
    api.ok("POST", f"/v1/projects/{NEW}/services/{CREDENTIALS}:enable", {})
    before = enabled(api)
    assert_google_error(api.call("POST", f"/v1/projects/{NEW}/{path}", body), 400, "INVALID_ARGUMENT")
    assert enabled(api) == before


@pytest.mark.parametrize("params", [{"filter": "state:ON"}, {"filter": "name:iam"}, {"pageSize": "-1"},
                                    {"pageToken": "!!"}, {"pageSize": "x"}])
def test_bad_list_parameters_are_400(api: Api, project: dict[str, Any], params: dict[str, str]) -> None:
    assert_google_error(api.call("GET", f"/v1/projects/{NEW}/services", params=params), 400, "INVALID_ARGUMENT")


def test_unknown_verbs_and_methods(api: Api, project: dict[str, Any]) -> None:
    assert_google_error(api.call("POST", f"/v1/projects/{NEW}/services/{IAM}:explode", {}), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", f"/v1/projects/{NEW}/services/{IAM}:enable"), 405, "UNIMPLEMENTED")
    assert_google_error(api.call("DELETE", f"/v1/projects/{NEW}/services"), 405, "UNIMPLEMENTED")
    for name in ("operations/x", "operations/acf.p2-1-!!", "operations/acf.p2-123-e30"):
        assert_google_error(api.call("GET", f"/v1/{name}"), 404, "NOT_FOUND")


def test_only_who_may_enable_services_does(api: Api, project: dict[str, Any]) -> None:
    viewer = user(api, "viewer@example.com", "roles/viewer")
    stranger = user(api, "stranger@example.com", None)
    editor = user(api, "editor@example.com", "roles/editor")
    admin = user(api, "usage-admin@example.com", "roles/serviceusage.serviceUsageAdmin")
    before = enabled(api)
    # A viewer reads, but neither enables nor disables.
    assert enabled(api, token=viewer) == before
    for path in (f"services/{IAM}:enable", "services:batchEnable", "services/storage.googleapis.com:disable"):
        body = {"serviceIds": [IAM]} if "batch" in path else {}
        error = assert_google_error(api.call("POST", f"/v1/projects/{NEW}/{path}", body, token=viewer), 403,
                                    "PERMISSION_DENIED")
        assert error["details"][0]["metadata"]["permission"].startswith("serviceusage.services.")
    # A caller with no role on the project reads nothing; a project that does not exist answers the same.
    for target in (NEW, "no-such-project"):
        error = assert_google_error(api.call("GET", f"/v1/projects/{target}/services", token=stranger), 403,
                                    "PERMISSION_DENIED")
        assert error["details"][0]["metadata"] == {"permission": "serviceusage.services.list",
                                                   "resource": f"projects/{target}"}
    op = api.ok("POST", f"/v1/projects/{NEW}/services/{IAM}:enable", {})
    assert_google_error(api.call("GET", f"/v1/{op['name']}", token=stranger), 403, "PERMISSION_DENIED")
    api.ok("POST", f"/v1/projects/{NEW}/services/{IAM}:disable", {})
    assert enabled(api) == before
    # Editors and Service Usage admins enable and disable.
    api.ok("POST", f"/v1/projects/{NEW}/services/{IAM}:enable", {}, token=editor)
    api.ok("POST", f"/v1/projects/{NEW}/services/{IAM}:disable", {}, token=admin)
    assert enabled(api) == before
