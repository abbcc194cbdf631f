"""Resource Manager v1 ``projects.list`` (``GET /v1/projects``): what ``gcloud init`` and ``gcloud projects list``
call (``filter=lifecycleState:ACTIVE&pageSize=201``); before it existed gcloud init could offer no project."""

from __future__ import annotations

from typing import Any

from tests.http.helpers import Api, assert_google_error

ACTIVE = {"filter": "lifecycleState:ACTIVE", "pageSize": "201"}


def _ids(listed: dict[str, Any]) -> list[str]:
    return [p["projectId"] for p in listed.get("projects", [])]


def test_lists_the_projects_the_caller_may_get_as_gcloud_init_asks(api: Api) -> None:
    for project in ("zeta-project", "alpha-project"):
        api.ok("POST", "/keyless/v1/projects", {"projectId": project})
    listed = api.ok("GET", "/v1/projects", params=ACTIVE)
    assert _ids(listed) == ["alpha-project", "keyless-dev", "zeta-project"]
    one = api.ok("GET", "/v1/projects/zeta-project")
    assert [p for p in listed["projects"] if p["projectId"] == "zeta-project"] == [
        {**one, "createTime": listed["projects"][2]["createTime"]}]
    assert listed["projects"][2]["createTime"].endswith("Z") and "nextPageToken" not in listed

    # A principal sees only the projects where it holds resourcemanager.projects.get.
    account = api.create_sa("lister-robot")
    api.grant_owner_token_creator(account["email"])
    api.add_binding("/v1/projects/zeta-project", "roles/viewer", f"serviceAccount:{account['email']}")
    token = api.sa_token(account["email"])["accessToken"]
    assert _ids(api.ok("GET", "/v1/projects", params=ACTIVE, token=token)) == ["zeta-project"]
    robot = api.create_sa("nothing-robot")
    api.grant_owner_token_creator(robot["email"])
    assert api.ok("GET", "/v1/projects", token=api.sa_token(robot["email"])["accessToken"]) == {}


def test_pages_and_filters(api: Api) -> None:
    api.ok("POST", "/keyless/v1/projects", {"projectId": "second-project"})
    first = api.ok("GET", "/v1/projects", params={"pageSize": "1"})
    assert _ids(first) == ["keyless-dev"] and first["nextPageToken"]
    second = api.ok("GET", "/v1/projects", params={"pageSize": "1", "pageToken": first["nextPageToken"]})
    assert _ids(second) == ["second-project"] and "nextPageToken" not in second
    assert _ids(api.ok("GET", "/v1/projects", params={"filter": "id:second-project"})) == ["second-project"]
    assert _ids(api.ok("GET", "/v1/projects", params={"filter": "name:keyless-dev lifecycleState=ACTIVE"})) == [
        "keyless-dev"]
    assert api.ok("GET", "/v1/projects", params={"filter": "lifecycleState:DELETE_REQUESTED"}) == {}
    assert api.ok("GET", "/v1/projects", params={"filter": "labels.env:prod"}) == {}  # keyless projects have none


def test_bad_input_is_a_google_error_and_changes_nothing(api: Api) -> None:
    assert_google_error(api.call("GET", "/v1/projects", params={"pageToken": "not a token"}), 400,
                        "INVALID_ARGUMENT")
    assert_google_error(api.call("GET", "/v1/projects", params={"pageSize": "-1"}), 400, "INVALID_ARGUMENT")
    assert_google_error(api.call("GET", "/v1/projects", params={"filter": "parent.type:folder OR x"}), 400,
                        "INVALID_ARGUMENT")
    assert_google_error(api.call("GET", "/v1/projects", auth=False), 401, "UNAUTHENTICATED")
    assert _ids(api.ok("GET", "/v1/projects")) == ["keyless-dev"]
    assert_google_error(api.call("POST", "/v1/projects", {"projectId": "made-by-post"}), 405, "UNIMPLEMENTED")
    assert _ids(api.ok("GET", "/v1/projects")) == ["keyless-dev"]
