"""``keyless serve --enforce-services``: a call whose consumer project has not enabled the API gets Google's 403
SERVICE_DISABLED. The consumer project: the ``x-goog-user-project`` header's (the caller must hold
``serviceusage.services.use`` there), else a service-account caller's own project, else (a user) the project the
request acts on. Without the flag nothing is refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.http.helpers import CLOUD, PROJECT, TOKEN_CREATOR, Api, assert_google_error

OTHER = "consumer-project"
IAM = "iam.googleapis.com"
CREDENTIALS = "iamcredentials.googleapis.com"
CONSOLE = "https://console.developers.google.com"


@pytest.fixture
def enforcing(api: Api) -> Iterator[Api]:
    core = api.inproc.keyless.core
    core.settings = replace(core.settings, enforce_services=True)
    yield api


@pytest.fixture
def other(api: Api) -> dict[str, Any]:
    """A second project, made after the server started: only Google's default services are enabled there."""
    created: dict[str, Any] = api.ok("POST", "/keyless/v1/projects", {"projectId": OTHER})
    return created


def user_token(api: Api, email: str) -> str:
    creds = api.ok("POST", "/keyless/v1/users", {"email": email})["credentials"]
    r = api.refresh_token_grant(creds)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def mint(api: Api, target: str, token: str | None = None, headers: dict[str, str] | None = None) -> Any:
    return api.call("POST", f"/v1/projects/-/serviceAccounts/{target}:generateAccessToken", {"scope": [CLOUD]},
                    token=token, headers=headers)


def assert_service_disabled(response: Any, service: str, title: str, number: str) -> None:
    error = assert_google_error(response, 403, "PERMISSION_DENIED")
    url = f"{CONSOLE}/apis/api/{service}/overview?project={number}"
    assert error["message"] == (
        f"{title} has not been used in project {number} before or it is disabled. Enable it by visiting {url} then "
        "retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems "
        "and retry.")
    info, localized, help_ = error["details"]
    assert info == {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {"activationUrl": url, "consumer": f"projects/{number}", "containerInfo": number,
                                 "service": service, "serviceTitle": title}}
    assert localized == {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                         "message": error["message"]}
    assert help_ == {"@type": "type.googleapis.com/google.rpc.Help",
                     "links": [{"description": "Google developers console API activation", "url": url}]}
    assert error["errors"] == [{"message": error["message"], "domain": "usageLimits", "reason": "accessNotConfigured",
                                "extendedHelp": CONSOLE}]


def test_without_the_flag_nothing_is_refused(api: Api, other: dict[str, Any]) -> None:
    api.create_sa("plain-robot", project=OTHER)
    assert api.ok("GET", f"/v1/projects/{OTHER}/serviceAccounts")["accounts"]


def test_a_users_call_needs_the_api_on_the_project_it_acts_on(enforcing: Api, other: dict[str, Any]) -> None:
    api = enforcing
    number = other["projectNumber"]
    assert_service_disabled(api.call("GET", f"/v1/projects/{OTHER}/serviceAccounts"), IAM,
                            "Identity and Access Management (IAM) API", number)
    assert_service_disabled(api.call("POST", f"/v1/projects/{OTHER}:getIamPolicy", {}),
                            "cloudresourcemanager.googleapis.com", "Cloud Resource Manager API", number)
    assert_service_disabled(api.call("GET", f"/v2/projects/{OTHER}/policies"), "orgpolicy.googleapis.com",
                            "Organization Policy API", number)
    # Service Usage itself is never refused (it is how the others are turned on).
    api.ok("POST", f"/v1/projects/{OTHER}/services:batchEnable", {"serviceIds": [IAM, CREDENTIALS]})
    assert api.ok("GET", f"/v1/projects/{OTHER}/serviceAccounts") == {"accounts": []}
    # The default project was made by this server's first start: Google's defaults only there too.
    assert_service_disabled(api.call("GET", f"/v1/projects/{PROJECT}/serviceAccounts"), IAM,
                            "Identity and Access Management (IAM) API", _number(api, PROJECT))


def _number(api: Api, project: str) -> str:
    return str(api.ok("GET", f"/v1/projects/{project}/services/{IAM}")["parent"].removeprefix("projects/"))


def test_the_credential_verbs_check_the_target_project_only_for_an_authorized_user(
        enforcing: Api, other: dict[str, Any]) -> None:
    api = enforcing
    api.ok("POST", f"/v1/projects/{OTHER}/services/{IAM}:enable", {})
    target = api.create_sa("target-robot", project=OTHER)["email"]
    api.grant_owner_token_creator(target)
    assert_service_disabled(mint(api, target), CREDENTIALS, "IAM Service Account Credentials API",
                            other["projectNumber"])
    # A caller who may not use the account learns nothing of its project: the usual denial.
    stranger = user_token(api, "stranger@example.com")
    error = assert_google_error(mint(api, target, stranger), 403, "PERMISSION_DENIED")
    assert error["details"][0]["reason"] == "IAM_PERMISSION_DENIED"
    api.ok("POST", f"/v1/projects/{OTHER}/services/{CREDENTIALS}:enable", {})
    assert mint(api, target).status_code == 200
    assert mint(api, target).status_code == 200  # a remembered chain is checked too
    api.ok("POST", f"/v1/projects/{OTHER}/services/{CREDENTIALS}:disable", {})
    assert_service_disabled(mint(api, target), CREDENTIALS, "IAM Service Account Credentials API",
                            other["projectNumber"])


def test_a_service_account_caller_consumes_its_own_project(enforcing: Api, other: dict[str, Any]) -> None:
    api = enforcing
    api.ok("POST", f"/v1/projects/{PROJECT}/services:batchEnable", {"serviceIds": [IAM, CREDENTIALS]})
    api.ok("POST", f"/v1/projects/{OTHER}/services:batchEnable", {"serviceIds": [IAM, CREDENTIALS]})
    caller = api.create_sa("caller-robot", project=OTHER)["email"]
    target = api.create_sa("target-robot")["email"]
    api.grant_owner_token_creator(caller)
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target}", TOKEN_CREATOR, f"serviceAccount:{caller}")
    token = api.sa_token(caller)["accessToken"]
    assert mint(api, target, token).status_code == 200
    # The caller's project turns the API off: the target's project has it, but the caller's is the consumer.
    api.ok("POST", f"/v1/projects/{OTHER}/services/{CREDENTIALS}:disable", {})
    assert_service_disabled(mint(api, target, token), CREDENTIALS, "IAM Service Account Credentials API",
                            other["projectNumber"])
    # So for IAM v1: the project in the path has the API, the caller's own project does not.
    api.ok("POST", f"/v1/projects/{OTHER}/services/{IAM}:disable", {})
    assert_service_disabled(api.call("GET", f"/v1/projects/{PROJECT}/serviceAccounts", token=token), IAM,
                            "Identity and Access Management (IAM) API", other["projectNumber"])


def test_the_user_project_header_names_the_consumer(enforcing: Api, other: dict[str, Any]) -> None:
    api = enforcing
    api.ok("POST", f"/v1/projects/{OTHER}/services/{IAM}:enable", {})
    # The default project lacks IAM; the header names a project that has it (the owner may use it).
    assert api.call("GET", f"/v1/projects/{PROJECT}/serviceAccounts").status_code == 403
    api.ok("GET", f"/v1/projects/{PROJECT}/serviceAccounts", headers={"x-goog-user-project": OTHER})
    api.ok("GET", f"/v1/projects/{PROJECT}/serviceAccounts",
           headers={"x-goog-user-project": other["projectNumber"]})
    # And the other way round.
    assert_service_disabled(api.call("GET", f"/v1/projects/{OTHER}/serviceAccounts",
                                     headers={"x-goog-user-project": PROJECT}),
                            IAM, "Identity and Access Management (IAM) API", _number(api, PROJECT))


@pytest.mark.parametrize("header", ["no-such-project", OTHER])
def test_a_user_project_the_caller_may_not_use_is_user_project_denied(enforcing: Api, other: dict[str, Any],
                                                                      header: str) -> None:
    api = enforcing
    for project in (PROJECT, OTHER):  # for the bindings below
        api.ok("POST", f"/v1/projects/{project}/services/cloudresourcemanager.googleapis.com:enable", {})
    api.ok("POST", f"/v1/projects/{OTHER}/services/{IAM}:enable", {})
    viewer = user_token(api, "viewer@example.com")
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", "user:viewer@example.com")
    r = api.call("GET", f"/v1/projects/{PROJECT}/serviceAccounts", token=viewer, headers={"x-goog-user-project": header})
    error = assert_google_error(r, 403, "PERMISSION_DENIED")
    assert error["details"][0] == {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "USER_PROJECT_DENIED",
                                   "domain": "googleapis.com",
                                   "metadata": {"consumer": f"projects/{header}", "service": IAM}}
    assert "serviceusage.services.use" in error["message"]
    # Granted serviceUsageConsumer on OTHER, the viewer may name it.
    if header == OTHER:
        api.add_binding(f"/v1/projects/{OTHER}", "roles/serviceusage.serviceUsageConsumer",
                        "user:viewer@example.com")
        api.ok("GET", f"/v1/projects/{PROJECT}/serviceAccounts", token=viewer, headers={"x-goog-user-project": header})
