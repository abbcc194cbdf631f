"""IAM allow policies over HTTP: project get/set/test under /v1/ and /v3/, versions, etags and conditions."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.domain.lifetimes import format_timestamp
from tests.http.helpers import CLOUD, PROJECT, TOKEN_CREATOR, Api, assert_google_error

OWNER = "user:owner@keyless.local"
VERSIONS = ["v1", "v3"]


def project_path(version: str, verb: str = "") -> str:
    return f"/{version}/projects/{PROJECT}{verb}"


@pytest.mark.parametrize("version", VERSIONS)
def test_get_project_policy(api: Api, version: str) -> None:
    policy = api.ok("POST", project_path(version, ":getIamPolicy"), {})
    assert policy["version"] == 1
    assert policy["etag"]
    assert {"role": "roles/owner", "members": [OWNER]} in policy["bindings"]


def test_v1_and_v3_see_the_same_policy(api: Api) -> None:
    v1 = api.ok("POST", project_path("v1", ":getIamPolicy"), {})
    v3 = api.ok("POST", project_path("v3", ":getIamPolicy"), {})
    assert v1 == v3
    v3["bindings"].append({"role": "roles/viewer", "members": ["user:reader@example.com"]})
    written = api.ok("POST", project_path("v3", ":setIamPolicy"), {"policy": v3})
    assert written["etag"] != v1["etag"]
    assert api.ok("POST", project_path("v1", ":getIamPolicy"), {}) == written


@pytest.mark.parametrize("version", VERSIONS)
def test_set_project_policy_round_trip(api: Api, version: str) -> None:
    current = api.ok("POST", project_path(version, ":getIamPolicy"), {})
    current["bindings"] += [
        {"role": "roles/viewer", "members": ["user:B@Example.com", "group:team@example.com"]},
        {"role": "roles/viewer", "members": ["domain:example.com"]},
    ]
    written = api.ok("POST", project_path(version, ":setIamPolicy"), {"policy": current})
    viewers = next(b for b in written["bindings"] if b["role"] == "roles/viewer")
    assert viewers["members"] == ["domain:example.com", "group:team@example.com", "user:b@example.com"]
    assert api.ok("POST", project_path(version, ":getIamPolicy"), {}) == written


@pytest.mark.parametrize("version", VERSIONS)
def test_stale_etag_is_409(api: Api, version: str) -> None:
    first = api.ok("POST", project_path(version, ":getIamPolicy"), {})
    second = dict(first, bindings=[*first["bindings"], {"role": "roles/viewer", "members": ["user:x@example.com"]}])
    api.ok("POST", project_path(version, ":setIamPolicy"), {"policy": second})
    r = api.call("POST", project_path(version, ":setIamPolicy"), {"policy": first})
    assert_google_error(r, 409, "ABORTED")


def _url_safe(etag: str) -> str:
    """The etag as gcloud sends it back: the same bytes in the URL-safe alphabet, padding dropped."""
    return etag.replace("+", "-").replace("/", "_").rstrip("=")


@pytest.mark.parametrize("resource", ["project", "account"])
def test_an_etag_in_the_url_safe_alphabet_is_the_same_etag(api: Api, sa: dict[str, Any], resource: str) -> None:
    path = project_path("v1") if resource == "project" else f"/v1/projects/-/serviceAccounts/{sa['email']}"
    stale = api.ok("POST", f"{path}:getIamPolicy", {})
    seen_special = False
    for i in range(60):  # until an etag with '+' or '/' has round-tripped (each etag has one about 1 time in 4)
        current = api.ok("POST", f"{path}:getIamPolicy", {})
        current["bindings"] = [*current.get("bindings", []),
                               {"role": "roles/viewer", "members": [f"user:u{i}@example.com"]}]
        sent = _url_safe(current["etag"])
        seen_special = seen_special or sent != current["etag"].rstrip("=")
        current["etag"] = sent
        api.ok("POST", f"{path}:setIamPolicy", {"policy": current})
        if seen_special and i >= 3:
            break
    assert seen_special
    stale["etag"] = _url_safe(stale["etag"])  # still stale in either alphabet
    assert_google_error(api.call("POST", f"{path}:setIamPolicy", {"policy": stale}), 409, "ABORTED")


def test_set_without_etag_overwrites(api: Api) -> None:
    current = api.ok("POST", project_path("v1", ":getIamPolicy"), {})
    body = {"bindings": [*current["bindings"], {"role": "roles/viewer", "members": ["user:x@example.com"]}]}
    written = api.ok("POST", project_path("v1", ":setIamPolicy"), {"policy": body})
    assert {"role": "roles/viewer", "members": ["user:x@example.com"]} in written["bindings"]


def test_update_mask_etag_only_keeps_bindings(api: Api) -> None:
    current = api.ok("POST", project_path("v1", ":getIamPolicy"), {})
    written = api.ok("POST", project_path("v1", ":setIamPolicy"),
                     {"policy": {"etag": current["etag"], "bindings": []}, "updateMask": "etag"})
    assert written["bindings"] == current["bindings"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("policy", [
    {"bindings": [{"role": "roles/nope", "members": [OWNER]}]},
    {"bindings": [{"role": "roles/viewer", "members": ["bob"]}]},
    {"bindings": [{"role": "roles/viewer", "members": ["serviceAccount:ghost@keyless-dev.iam.gserviceaccount.com"]}]},
    {"version": 2, "bindings": []},
    {"version": 1, "bindings": [{"role": "roles/viewer", "members": [OWNER],
                                 "condition": {"title": "t", "expression": "true"}}]},
    {"version": 3, "bindings": [{"role": "roles/viewer", "members": [OWNER],
                                 "condition": {"title": "t", "expression": "foo.bar == 1"}}]},
    {"version": 3, "bindings": [{"role": "roles/viewer", "members": [OWNER],
                                 "condition": {"title": "t", "expression": "resource.name"}}]},
    {"version": 3, "bindings": [{"role": "roles/viewer", "members": [OWNER],
                                 "condition": {"title": "t", "expression": "request.time <"}}]},
])
def test_invalid_policies_are_400_and_change_nothing(api: Api, version: str, policy: dict[str, Any]) -> None:
    before = api.ok("POST", project_path(version, ":getIamPolicy"), {})
    assert_google_error(api.call("POST", project_path(version, ":setIamPolicy"), {"policy": policy}), 400,
                        "INVALID_ARGUMENT")
    assert api.ok("POST", project_path(version, ":getIamPolicy"), {}) == before


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_project_policy(api: Api, version: str) -> None:
    """Resource Manager answers 403 for a project that does not exist (it never reveals existence)."""
    r = api.call("POST", f"/{version}/projects/no-such-project:getIamPolicy", {})
    assert_google_error(r, 403, "PERMISSION_DENIED")


# ---------------------------------------------------------------- testIamPermissions


@pytest.mark.parametrize("version", VERSIONS)
def test_test_iam_permissions(api: Api, version: str) -> None:
    asked = ["resourcemanager.projects.getIamPolicy", "iam.serviceAccounts.create",
             "iam.serviceAccounts.getAccessToken", "made.up.permission"]
    granted = api.ok("POST", project_path(version, ":testIamPermissions"), {"permissions": asked})
    assert granted == {"permissions": ["resourcemanager.projects.getIamPolicy", "iam.serviceAccounts.create"]}
    assert api.ok("POST", project_path(version, ":testIamPermissions"), {"permissions": []}) == {}
    assert api.ok("POST", project_path(version, ":testIamPermissions"), {}) == {}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("permission", ["*", "iam.*", "iam.serviceAccounts.*", "resourcemanager.projects.get*"])
def test_test_iam_permissions_wildcards_are_400(api: Api, version: str, permission: str) -> None:
    r = api.call("POST", project_path(version, ":testIamPermissions"),
                 {"permissions": ["iam.serviceAccounts.get", permission]})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_test_iam_permissions_on_an_account_wildcard_is_400(api: Api, sa: dict[str, Any]) -> None:
    path = f"/v1/projects/-/serviceAccounts/{sa['email']}:testIamPermissions"
    assert_google_error(api.call("POST", path, {"permissions": ["iam.serviceAccounts.*"]}), 400, "INVALID_ARGUMENT")
    granted = api.ok("POST", path, {"permissions": ["iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.get"]})
    assert granted == {"permissions": ["iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.get"]}


def test_test_iam_permissions_limit(api: Api) -> None:
    many = [f"iam.serviceAccounts.p{i}" for i in range(101)]
    assert_google_error(api.call("POST", project_path("v1", ":testIamPermissions"), {"permissions": many}), 400,
                        "INVALID_ARGUMENT")


# ---------------------------------------------------------------- versions and conditions


def _conditional_policy(api: Api, version: str, expression: str = "true") -> dict[str, Any]:
    current = api.ok("POST", project_path(version, ":getIamPolicy"), {})
    current["version"] = 3
    current["bindings"].append({"role": "roles/viewer", "members": ["user:later@example.com"],
                                "condition": {"title": "cond", "expression": expression}})
    written: dict[str, Any] = api.ok("POST", project_path(version, ":setIamPolicy"), {"policy": current})
    return written


@pytest.mark.parametrize("version", VERSIONS)
def test_conditional_policy_needs_requested_version_3(api: Api, version: str) -> None:
    written = _conditional_policy(api, version)
    assert written["version"] == 3
    path = project_path(version, ":getIamPolicy")
    for requested in (0, 1):
        assert_google_error(api.call("POST", path, {"options": {"requestedPolicyVersion": requested}}), 400,
                            "INVALID_ARGUMENT")
        assert_google_error(api.call("POST", path, params={"options.requestedPolicyVersion": str(requested)}), 400,
                            "INVALID_ARGUMENT")
    assert_google_error(api.call("POST", path, {}), 400, "INVALID_ARGUMENT")
    assert api.ok("POST", path, {"options": {"requestedPolicyVersion": 3}}) == written
    assert api.ok("POST", path, params={"options.requestedPolicyVersion": "3"}) == written


@pytest.mark.parametrize("requested", [2, 4, -1, "x"])
def test_invalid_requested_versions_are_400(api: Api, requested: Any) -> None:
    r = api.call("POST", project_path("v1", ":getIamPolicy"), {"options": {"requestedPolicyVersion": requested}})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_account_policy_versions(api: Api, sa: dict[str, Any]) -> None:
    path = f"/v1/projects/-/serviceAccounts/{sa['email']}"
    api.add_binding(path, "roles/viewer", "user:x@example.com",
                    condition={"title": "always", "expression": "resource.type == 'iam.googleapis.com/ServiceAccount'"})
    assert_google_error(api.call("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 1}}), 400,
                        "INVALID_ARGUMENT")
    policy = api.ok("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    assert policy["version"] == 3


def test_conditional_binding_stops_granting_when_the_clock_passes_it(api: Api, sa: dict[str, Any]) -> None:
    email = sa["email"]
    path = f"/v1/projects/-/serviceAccounts/{email}"
    # Replace the owner's unconditional grant with one that lapses in ten minutes.
    policy = api.ok("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    deadline = format_timestamp(api.clock.now() + 600)
    policy["version"] = 3
    policy["bindings"] = [{"role": TOKEN_CREATOR, "members": [OWNER], "condition": {
        "title": "ten minutes", "expression": f'request.time < timestamp("{deadline}")'}}]
    api.ok("POST", f"{path}:setIamPolicy", {"policy": policy})

    assert api.sa_token(email)["accessToken"]
    assert api.ok("POST", f"{path}:testIamPermissions",
                  {"permissions": ["iam.serviceAccounts.getAccessToken"]}) == {
        "permissions": ["iam.serviceAccounts.getAccessToken"]}
    api.clock.advance(590)
    assert api.sa_token(email)["accessToken"]

    api.clock.advance(11)
    error = assert_google_error(api.call("POST", f"{path}:generateAccessToken", {"scope": [CLOUD]}), 403,
                                "PERMISSION_DENIED")
    assert "iam.serviceAccounts.getAccessToken" in error["message"]
    assert api.ok("POST", f"{path}:testIamPermissions", {"permissions": ["iam.serviceAccounts.getAccessToken"]}) == {}


def test_project_level_conditional_binding_on_resource_type(api: Api, sa: dict[str, Any]) -> None:
    """A project binding limited to service-account resources grants on accounts but not on the project."""
    reader = api.create_sa("reader-bot")
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{reader['email']}", condition={
        "title": "accounts only", "expression": 'resource.type == "iam.googleapis.com/ServiceAccount"'})
    api.grant_owner_token_creator(reader["email"])
    token = api.sa_token(reader["email"])["accessToken"]
    assert api.call("GET", f"/v1/projects/-/serviceAccounts/{sa['email']}", token=token).status_code == 200
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=token), 403, "PERMISSION_DENIED")


def test_condition_on_resource_name_selects_one_account(api: Api, sa: dict[str, Any]) -> None:
    """IAM Conditions see a service account as projects/-/serviceAccounts/UNIQUE_ID."""
    chosen = api.create_sa("chosen-bot")
    other = api.create_sa("unchosen-bot")
    api.add_binding(f"/v1/projects/{PROJECT}", TOKEN_CREATOR, OWNER, condition={
        "title": "one account", "expression": f'resource.name == "projects/-/serviceAccounts/{chosen["uniqueId"]}"'})
    assert api.sa_token(chosen["email"])["accessToken"]
    r = api.call("POST", f"/v1/projects/-/serviceAccounts/{other['email']}:generateAccessToken", {"scope": [CLOUD]})
    assert_google_error(r, 403, "PERMISSION_DENIED")


def test_condition_that_errors_at_request_time_denies(api: Api, sa: dict[str, Any]) -> None:
    """A well-typed condition that fails at evaluation grants nothing: 403, never a 500."""
    path = f"/v1/projects/-/serviceAccounts/{sa['email']}"
    policy = api.ok("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    policy["version"] = 3
    policy["bindings"] = [{"role": TOKEN_CREATOR, "members": [OWNER], "condition": {
        "title": "odd", "expression": 'request.time < timestamp("2024-01-01T00:00:00Z") || int(resource.name) > 0'}}]
    api.ok("POST", f"{path}:setIamPolicy", {"policy": policy})
    r = api.client.post(f"{path}:generateAccessToken", json={"scope": [CLOUD]},
                        headers={"Authorization": f"Bearer {api.owner_token}"})
    assert_google_error(r, 403, "PERMISSION_DENIED")


# ---------------------------------------------------------------- project resource


@pytest.mark.parametrize(("version", "shape"), [("v1", "projectNumber"), ("v3", "name")])
def test_get_project(api: Api, version: str, shape: str) -> None:
    got = api.ok("GET", project_path(version))
    assert got["projectId"] == PROJECT
    assert shape in got
