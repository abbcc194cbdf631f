"""A denial the owner can understand, and the caller cannot learn from.

A typo in an account's email, a missing role and a condition that evaluated false give the caller one
Google-shaped 403, byte for byte (naming only what it sent). The owner reads in the audit log which of these
it was (``protoPayload.metadata.explanation``): the nearest email for a typo, the title of the condition, the
roles that would grant, the hop of a delegation chain that failed. Nobody else can read the audit log.
In process, on a frozen clock."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from keyless.storage.base import AuditQuery
from tests.conftest import InProcess
from tests.http.helpers import CLOUD, PROJECT, TOKEN_CREATOR, Api, assert_google_error

ACCOUNTS = "/v1/projects/-/serviceAccounts"
TOKEN = "iam.serviceAccounts.getAccessToken"
ALICE = "alice@example.com"
DOMAIN = f"{PROJECT}.iam.gserviceaccount.com"
TARGET = f"target-sa@{DOMAIN}"
TYPO = f"traget-sa@{DOMAIN}"
OFFICE_HOURS = {"title": "office-hours", "expression": 'request.time < timestamp("2000-01-01T00:00:00Z")'}
# What only the owner may read: none of it may reach the caller.
OWNER_ONLY = ("did you mean", "office-hours", "evaluated false", "roles that would", "no binding", "no account",
              "explanation", "hop ", "roles/")


def _user_token(api: Api, email: str) -> str:
    creds = api.ok("POST", "/keyless/v1/users", {"email": email})["credentials"]
    r = api.refresh_token_grant(creds)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _mint(api: Api, token: str, email: str, **body: Any) -> Any:
    return api.call("POST", f"{ACCOUNTS}/{email}:generateAccessToken", {"scope": [CLOUD], **body}, token=token)


def _denials(api: Api, **params: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = api.ok("GET", "/v1/auditLog", params={
        "filter": "denied=true", "orderBy": "timestamp desc", **params})["entries"]
    return entries


def _why(entry: dict[str, Any]) -> dict[str, Any]:
    """The explanation, without the troubleshooting request that the log adds when it is read (checked apart)."""
    explanation: dict[str, Any] = dict(entry["protoPayload"]["metadata"]["explanation"])
    explanation.pop("troubleshoot", None)
    return explanation


def _troubleshoot(entry: dict[str, Any]) -> dict[str, Any]:
    link: dict[str, Any] = entry["protoPayload"]["metadata"]["explanation"]["troubleshoot"]
    return link


def test_three_causes_one_answer_for_the_caller_three_explanations_for_the_owner(api: Api) -> None:
    target = api.create_sa("target-sa")
    office = api.create_sa("office-sa")
    api.create_sa("other-sa")
    api.add_binding(f"{ACCOUNTS}/{office['email']}", TOKEN_CREATOR, f"user:{ALICE}", OFFICE_HOURS)
    alice = _user_token(api, ALICE)

    answers = []
    for named in (TYPO, target["email"], office["email"]):
        r = _mint(api, alice, named)
        assert_google_error(r, 403, "PERMISSION_DENIED")
        assert all(text not in r.text for text in OWNER_ONLY), r.text
        assert target["uniqueId"] not in r.text and office["uniqueId"] not in r.text
        answers.append((r.status_code, r.headers["content-type"], r.content.replace(named.encode(), b"{ACCOUNT}")))
    assert answers[0] == answers[1] == answers[2]

    office_why, missing_role_why, typo_why = (_why(e) for e in _denials(api)[:3])
    # Each read denial names the request that explains it hop by hop (docs/troubleshooting.md).
    assert _troubleshoot(_denials(api)[2]) == {
        "method": "POST", "path": "/keyless/v1/iam:troubleshootChain",
        "body": {"principal": ALICE, "serviceAccount": f"projects/-/serviceAccounts/{TYPO}",
                 "method": "generateAccessToken"}}
    assert typo_why == {
        "reason": "ACCOUNT_NOT_FOUND",
        "summary": f"no account {TYPO} in {PROJECT}; did you mean {TARGET}?",
        "principal": f"user:{ALICE}", "permission": TOKEN, "resource": f"projects/-/serviceAccounts/{TYPO}",
        "suggestion": TARGET}
    assert missing_role_why["reason"] == "NO_MATCHING_BINDING"
    assert missing_role_why["summary"] == (
        f"no binding grants {TOKEN} to user:{ALICE} on {TARGET} (roles that would: {TOKEN_CREATOR}, "
        "roles/iam.workloadIdentityUser)")
    assert missing_role_why["resource"] == f"projects/-/serviceAccounts/{target['uniqueId']}"
    assert missing_role_why["grantingRoles"] == [TOKEN_CREATOR, "roles/iam.workloadIdentityUser"]
    assert office_why["reason"] == "CONDITION_NOT_MET"
    assert office_why["summary"].startswith("condition 'office-hours' evaluated false")
    assert office_why["conditions"] == [{"title": "office-hours", "role": TOKEN_CREATOR, "result": "false"}]


def test_entries_name_the_account_by_email_beside_its_unique_id(api: Api) -> None:
    target = api.create_sa("target-sa")
    api.grant_owner_token_creator(target["email"])
    api.sa_token(target["email"])
    [entry] = [e for e in api.ok("GET", "/v1/auditLog", params={"orderBy": "timestamp desc"})["entries"]
               if e["protoPayload"]["methodName"] == "GenerateAccessToken"]
    assert entry["protoPayload"]["resourceName"] == f"projects/-/serviceAccounts/{target['uniqueId']}"
    # Cloud Logging's monitored resource of a service account.
    assert entry["resource"] == {"type": "service_account", "labels": {
        "email_id": target["email"], "project_id": PROJECT, "unique_id": target["uniqueId"]}}
    assert "metadata" not in entry["protoPayload"]  # a success has nothing to explain
    key = api.ok("POST", f"{ACCOUNTS}/{target['email']}/keys", {})
    [created] = [e for e in api.ok("GET", "/v1/auditLog", params={"orderBy": "timestamp desc"})["entries"]
                 if e["protoPayload"]["methodName"].endswith("CreateServiceAccountKey")]
    assert created["protoPayload"]["resourceName"].endswith(key["name"].rpartition("/")[2])
    assert created["resource"]["labels"]["email_id"] == target["email"]
    api.ok("DELETE", f"{ACCOUNTS}/{target['email']}")  # a deleted account is still named
    [entry] = [e for e in api.ok("GET", "/v1/auditLog")["entries"]
               if e["protoPayload"]["methodName"] == "GenerateAccessToken"]
    assert entry["resource"]["labels"]["email_id"] == target["email"]


def test_a_delegation_chain_names_the_hop_that_failed(api: Api) -> None:
    target = api.create_sa("target-sa")
    delegate = api.create_sa("delegate-sa")
    api.add_binding(f"{ACCOUNTS}/{delegate['email']}", TOKEN_CREATOR, f"user:{ALICE}")
    alice = _user_token(api, ALICE)
    assert _mint(api, alice, target["email"], delegates=[delegate["email"]]).status_code == 403
    typo = delegate["email"].replace("delegate", "delgate")
    assert _mint(api, alice, target["email"], delegates=[typo]).status_code == 403
    missing_delegate, second_hop = (_why(e) for e in _denials(api)[:2])
    assert second_hop["hop"] == 2 and second_hop["hops"] == 2
    assert second_hop["summary"] == (
        f"delegation hop 2 of 2: no binding grants {TOKEN} to serviceAccount:{delegate['email']} on "
        f"{target['email']} (roles that would: {TOKEN_CREATOR}, roles/iam.workloadIdentityUser)")
    assert second_hop["principal"] == f"serviceAccount:{delegate['email']}"
    assert missing_delegate["hop"] == 1 and missing_delegate["reason"] == "ACCOUNT_NOT_FOUND"
    assert missing_delegate["summary"] == (f"delegation hop 1 of 2: no account {typo} in {PROJECT}; did you mean "
                                           f"{delegate['email']}?")
    assert missing_delegate["permission"] == "iam.serviceAccounts.implicitDelegation"


def test_denials_on_a_project_and_on_admin_verbs_of_an_account(api: Api) -> None:
    target = api.create_sa("target-sa")
    alice = _user_token(api, ALICE)
    r = api.call("POST", f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": "alice-sa"}, token=alice)
    assert_google_error(r, 403, "PERMISSION_DENIED")
    r = api.call("DELETE", f"/v1/projects/{PROJECT}/serviceAccounts/{target['email']}", token=alice)
    assert_google_error(r, 403, "PERMISSION_DENIED")
    r = api.call("DELETE", f"/v1/projects/{PROJECT}/serviceAccounts/{TYPO}", token=alice)
    assert_google_error(r, 403, "PERMISSION_DENIED")
    for project in (PROJECT, "keyles-dev"):  # Resource Manager's 403 is the same for a project that is not there
        r = api.call("POST", f"/v1/projects/{project}:setIamPolicy", {"policy": {}}, token=alice)
        assert_google_error(r, 403, "PERMISSION_DENIED")
        assert all(text not in r.text for text in OWNER_ONLY), r.text
    no_project, set_policy, typo, delete, create = (_why(e) for e in _denials(api)[:5])
    assert no_project == {"reason": "PROJECT_NOT_FOUND", "summary": f"no project keyles-dev; did you mean {PROJECT}?",
                          "principal": f"user:{ALICE}", "permission": "resourcemanager.projects.setIamPolicy",
                          "resource": "projects/keyles-dev", "suggestion": PROJECT}
    assert set_policy["summary"].startswith(f"no binding grants resourcemanager.projects.setIamPolicy to "
                                            f"user:{ALICE} on projects/{PROJECT}")
    assert create["summary"].startswith(f"no binding grants iam.serviceAccounts.create to user:{ALICE} on "
                                        f"projects/{PROJECT} (roles that would: roles/iam.serviceAccountAdmin")
    assert delete["summary"].startswith(f"no binding grants iam.serviceAccounts.delete to user:{ALICE} on {TARGET}")
    assert typo["summary"] == f"no account {TYPO} in {PROJECT}; did you mean {TARGET}?"


def test_what_a_missing_account_was(api: Api) -> None:
    """Named by unique id, deleted, in another project, in a project that does not exist."""
    target = api.create_sa("target-sa")
    gone = api.create_sa("gone-sa")
    api.ok("DELETE", f"{ACCOUNTS}/{gone['email']}")
    api.ok("POST", "/keyless/v1/projects", {"projectId": "other-proj"})
    alice = _user_token(api, ALICE)
    for method, path, body in (
            ("POST", f"{ACCOUNTS}/123456789012345678901:generateAccessToken", {"scope": [CLOUD]}),
            ("POST", f"{ACCOUNTS}/{gone['uniqueId']}:generateAccessToken", {"scope": [CLOUD]}),
            ("DELETE", f"/v1/projects/other-proj/serviceAccounts/{target['email']}", None),
            ("POST", f"{ACCOUNTS}/target-sa@keyles-dev.iam.gserviceaccount.com:generateAccessToken",
             {"scope": [CLOUD]})):
        assert_google_error(api.call(method, path, body, token=alice), 403, "PERMISSION_DENIED")
    summaries = [_why(e)["summary"] for e in _denials(api)[:4]]
    assert summaries == [
        f"no account target-sa@keyles-dev.iam.gserviceaccount.com: there is no project keyles-dev; did you mean "
        f"{TARGET}?",
        f"account {TARGET} is in project {PROJECT}, not in other-proj",
        f"account {gone['uniqueId']} ({gone['email']}) was deleted",
        "no account with unique id 123456789012345678901",
    ]


def test_only_the_owner_reads_the_log_and_its_order(api: Api) -> None:
    alice = _user_token(api, ALICE)
    assert _mint(api, alice, TYPO).status_code == 403
    r = api.call("GET", "/v1/auditLog", token=alice)
    assert_google_error(r, 403, "PERMISSION_DENIED")
    assert all(text not in r.text for text in OWNER_ONLY), r.text

    oldest = api.ok("GET", "/v1/auditLog")["entries"]
    assert len(oldest) > 3
    ascending = api.ok("GET", "/v1/auditLog", params={"orderBy": "timestamp asc"})["entries"]
    newest = api.ok("GET", "/v1/auditLog", params={"orderBy": "timestamp desc"})["entries"]
    assert oldest == ascending and newest == oldest[::-1]
    # Pages of the newest-first order go back in time.
    pages: list[dict[str, Any]] = []
    params = {"orderBy": "timestamp desc", "pageSize": "2"}
    while True:
        page = api.ok("GET", "/v1/auditLog", params=params)
        pages.extend(page["entries"])
        if "nextPageToken" not in page:
            break
        params["pageToken"] = page["nextPageToken"]
    assert pages == newest
    token = api.ok("GET", "/v1/auditLog", params={"pageSize": "1"})["nextPageToken"]
    for bad in ({"orderBy": "insertId desc"}, {"orderBy": "timestamp sideways"},
                {"orderBy": "timestamp desc", "pageToken": token}):
        assert_google_error(api.call("GET", "/v1/auditLog", params=bad), 400, "INVALID_ARGUMENT")


def test_the_nearest_account_is_looked_for_when_the_log_is_read(api: Api, inproc: InProcess,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Not when the caller is refused: comparing a typo with every account would make the denial of a missing
    account slower than the denial of an existing one, and its time would tell what its answer does not. The
    ``--audit-log`` stream, written before the response, carries the explanation without the suggestion."""
    sink = io.StringIO()
    monkeypatch.setattr(inproc.keyless.audit, "_sink", sink)
    alice = _user_token(api, ALICE)
    typo = f"deployer-sb@{DOMAIN}"
    assert _mint(api, alice, typo).status_code == 403
    stored = inproc.run(inproc.keyless.store.query_audit(AuditQuery(denied=True, newest_first=True, limit=1)))[0]
    assert stored.body["explanation"]["findNearest"] == {"email": typo, "project": PROJECT}  # where, not what
    [streamed] = [json.loads(line) for line in sink.getvalue().splitlines()
                  if json.loads(line)["severity"] == "ERROR"]
    assert _why(streamed) == {"reason": "ACCOUNT_NOT_FOUND", "summary": f"no account {typo} in {PROJECT}",
                              "principal": f"user:{ALICE}", "permission": TOKEN,
                              "resource": f"projects/-/serviceAccounts/{typo}"}
    assert _why(_denials(api)[0]) == _why(streamed)  # nothing near yet
    api.create_sa("deployer-sa")
    assert _why(_denials(api)[0]) == {**_why(streamed), "suggestion": f"deployer-sa@{DOMAIN}",
                                      "summary": f"no account {typo} in {PROJECT}; did you mean "
                                                 f"deployer-sa@{DOMAIN}?"}
