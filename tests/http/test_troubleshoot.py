"""Policy Troubleshooter (v3 and v2alpha1) and the chain explanation over HTTP: shapes, who may ask, conditions,
groups and federated principals."""

from __future__ import annotations

from typing import Any

from tests.http.helpers import PROJECT, TOKEN_CREATOR, Api, assert_google_error

POOL = "projects/123456789012/locations/global/workloadIdentityPools/ci-pool"
FEDERATED = f"principal://iam.googleapis.com/{POOL}/subject/repo:org/app"
PAST = {"expression": 'request.time < timestamp("2000-01-01T00:00:00Z")', "title": "expired"}


def user_token(api: Api, email: str) -> str:
    creds = api.ok("POST", "/keyless/v1/users", {"email": email})["credentials"]
    r = api.refresh_token_grant(creds)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def account_name(email: str) -> str:
    return f"//iam.googleapis.com/projects/{PROJECT}/serviceAccounts/{email}"


def troubleshoot(api: Api, principal: str, resource: str, permission: str, *, version: str = "v3",
                 token: str | None = None, context: dict[str, Any] | None = None) -> Any:
    access: dict[str, Any] = {"principal": principal, "fullResourceName": resource, "permission": permission}
    if context is not None:
        access["conditionContext"] = context
    return api.call("POST", f"/{version}/iam:troubleshoot", {"accessTuple": access}, token=token)


def binding(answer: dict[str, Any], resource: str, role: str) -> dict[str, Any]:
    policy = next(p for p in answer["allowPolicyExplanation"]["explainedPolicies"]
                  if p["fullResourceName"] == resource)
    found: dict[str, Any] = next(b for b in policy["bindingExplanations"] if b["role"] == role)
    return found


def test_a_granted_token_creator_is_explained_in_v3s_shape(api: Api) -> None:
    sa = api.create_sa("explained")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{sa['email']}", TOKEN_CREATOR, "user:alice@example.com")
    r = troubleshoot(api, "alice@example.com", account_name(sa["email"]), "iam.serviceAccounts.getAccessToken")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["overallAccessState"] == "CAN_ACCESS"
    assert answer["accessTuple"]["principal"] == "alice@example.com"
    allow = answer["allowPolicyExplanation"]
    assert allow["allowAccessState"] == "ALLOW_ACCESS_STATE_GRANTED"
    names = [p["fullResourceName"] for p in allow["explainedPolicies"]]
    assert names == [account_name(sa["email"]), f"//cloudresourcemanager.googleapis.com/projects/{PROJECT}"]
    granted = binding(answer, account_name(sa["email"]), TOKEN_CREATOR)
    assert granted["allowAccessState"] == "ALLOW_ACCESS_STATE_GRANTED"
    assert granted["rolePermission"] == "ROLE_PERMISSION_INCLUDED"
    assert granted["memberships"]["user:alice@example.com"] == {"membership": "MEMBERSHIP_MATCHED",
                                                                "relevance": "HEURISTIC_RELEVANCE_HIGH"}
    assert granted["combinedMembership"]["membership"] == "MEMBERSHIP_MATCHED"
    assert granted["relevance"] == "HEURISTIC_RELEVANCE_HIGH"
    owner = binding(answer, names[1], "roles/owner")  # the project's owner binding: it names someone else
    assert owner["allowAccessState"] == "ALLOW_ACCESS_STATE_NOT_GRANTED"
    assert owner["rolePermission"] == "ROLE_PERMISSION_NOT_INCLUDED"  # owner has no getAccessToken
    deny = answer["denyPolicyExplanation"]
    assert deny["denyAccessState"] == "DENY_ACCESS_STATE_NOT_DENIED"
    assert [d["fullResourceName"] for d in deny["explainedResources"]] == names


def test_v2alpha1_answers_in_its_own_shape(api: Api) -> None:
    sa = api.create_sa("explained-v2")
    r = troubleshoot(api, "bob@example.com", account_name(sa["email"]), "iam.serviceAccounts.signBlob",
                     version="v2alpha1")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["access"] == "NOT_GRANTED"
    project = answer["explainedPolicies"][1]
    assert project["access"] == "NOT_GRANTED"
    owner = next(b for b in project["bindingExplanations"] if b["role"] == "roles/owner")
    assert owner["memberships"]["user:owner@keyless.local"]["membership"] == "MEMBERSHIP_NOT_INCLUDED"
    assert owner["relevance"] in ("HIGH", "NORMAL")


def test_a_condition_is_evaluated_at_the_requests_time(api: Api) -> None:
    sa = api.create_sa("conditional")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{sa['email']}", TOKEN_CREATOR, "user:carol@example.com",
                    condition=PAST)
    now = troubleshoot(api, "carol@example.com", account_name(sa["email"]), "iam.serviceAccounts.getAccessToken")
    assert now.json()["overallAccessState"] == "CANNOT_ACCESS"
    explained = binding(now.json(), account_name(sa["email"]), TOKEN_CREATOR)
    assert explained["condition"]["title"] == "expired"
    assert explained["conditionExplanation"] == {"value": False}
    assert explained["relevance"] == "HEURISTIC_RELEVANCE_HIGH"  # the condition alone stands in the way
    then = troubleshoot(api, "carol@example.com", account_name(sa["email"]), "iam.serviceAccounts.getAccessToken",
                        context={"request": {"receiveTime": "1999-06-01T00:00:00Z"}})
    assert then.json()["overallAccessState"] == "CAN_ACCESS"
    assert binding(then.json(), account_name(sa["email"]), TOKEN_CREATOR)["conditionExplanation"] == {"value": True}


def test_a_group_membership_is_expanded(api: Api) -> None:
    sa = api.create_sa("grouped")
    api.ok("PUT", "/keyless/v1/groups/devs@example.com", {"members": ["user:dave@example.com"]})
    api.add_binding(f"/v1/projects/-/serviceAccounts/{sa['email']}", TOKEN_CREATOR, "group:devs@example.com")
    answer = troubleshoot(api, "dave@example.com", account_name(sa["email"]),
                          "iam.serviceAccounts.signJwt").json()
    assert answer["overallAccessState"] == "CAN_ACCESS"
    explained = binding(answer, account_name(sa["email"]), TOKEN_CREATOR)
    assert explained["memberships"]["group:devs@example.com"]["membership"] == "MEMBERSHIP_MATCHED"
    assert explained["combinedMembership"] == {"membership": "MEMBERSHIP_MATCHED",
                                               "relevance": "HEURISTIC_RELEVANCE_HIGH"}


def test_federated_principals_match_their_subject_and_pool(api: Api) -> None:
    sa = api.create_sa("federated")
    path = f"/v1/projects/-/serviceAccounts/{sa['email']}"
    api.add_binding(path, "roles/iam.workloadIdentityUser", FEDERATED)
    api.add_binding(path, TOKEN_CREATOR, f"principalSet://iam.googleapis.com/{POOL}/attribute.repo/org")
    answer = troubleshoot(api, FEDERATED, account_name(sa["email"]), "iam.serviceAccounts.getAccessToken").json()
    assert answer["overallAccessState"] == "CAN_ACCESS"
    assert binding(answer, account_name(sa["email"]), "roles/iam.workloadIdentityUser")["allowAccessState"] == \
        "ALLOW_ACCESS_STATE_GRANTED"
    # Which attributes a subject has only its token tells: the troubleshooter says it does not know.
    by_attribute = binding(answer, account_name(sa["email"]), TOKEN_CREATOR)
    assert by_attribute["combinedMembership"]["membership"] == "MEMBERSHIP_UNKNOWN_INFO"


def test_projects_are_troubleshot_too(api: Api) -> None:
    answer = troubleshoot(api, "owner@keyless.local", f"//cloudresourcemanager.googleapis.com/projects/{PROJECT}",
                          "resourcemanager.projects.setIamPolicy").json()
    assert answer["overallAccessState"] == "CAN_ACCESS"
    assert len(answer["allowPolicyExplanation"]["explainedPolicies"]) == 1


def test_a_caller_who_may_not_read_the_policy_is_refused(api: Api) -> None:
    sa = api.create_sa("private")
    token = user_token(api, "eve@example.com")
    r = troubleshoot(api, "eve@example.com", account_name(sa["email"]), "iam.serviceAccounts.getAccessToken",
                     token=token)
    body = assert_google_error(r, 403, "PERMISSION_DENIED")
    assert "iam.serviceAccounts.getIamPolicy" in body["message"]
    # A missing account reads the same as one the caller may not see.
    missing = troubleshoot(api, "eve@example.com", account_name(f"nobody@{PROJECT}.iam.gserviceaccount.com"),
                           "iam.serviceAccounts.getAccessToken", token=token)
    assert missing.status_code == 403
    project = troubleshoot(api, "eve@example.com", f"//cloudresourcemanager.googleapis.com/projects/{PROJECT}",
                           "resourcemanager.projects.get", token=token)
    assert_google_error(project, 403, "PERMISSION_DENIED")


def test_a_policy_the_caller_may_not_read_is_unknown_info(api: Api) -> None:
    sa = api.create_sa("half-visible")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{sa['email']}", "roles/iam.securityReviewer",
                    "user:reviewer@example.com")
    token = user_token(api, "reviewer@example.com")
    answer = troubleshoot(api, "frank@example.com", account_name(sa["email"]),
                          "iam.serviceAccounts.getAccessToken", token=token).json()
    project = answer["allowPolicyExplanation"]["explainedPolicies"][1]
    assert project == {"allowAccessState": "ALLOW_ACCESS_STATE_UNKNOWN_INFO",
                       "fullResourceName": f"//cloudresourcemanager.googleapis.com/projects/{PROJECT}",
                       "relevance": "HEURISTIC_RELEVANCE_NORMAL"}
    assert answer["overallAccessState"] == "UNKNOWN_INFO"


def test_bad_access_tuples_are_google_errors(api: Api) -> None:
    sa = api.create_sa("bad-input")
    for access in ({}, {"principal": "a@example.com", "fullResourceName": account_name(sa["email"])},
                   {"principal": "a@example.com", "fullResourceName": "//storage.googleapis.com/b",
                    "permission": "storage.objects.get"},
                   {"principal": "group:g@example.com", "fullResourceName": account_name(sa["email"]),
                    "permission": "iam.serviceAccounts.get"},
                   {"principal": "a@example.com", "fullResourceName": account_name(sa["email"]),
                    "permission": "iam.serviceAccounts.get", "conditionContext": {"request": {"receiveTime": "x"}}},
                   {"principal": "a@example.com", "fullResourceName": account_name(sa["email"]),
                    "permission": "iam.serviceAccounts.get", "surprise": 1}):
        assert_google_error(api.call("POST", "/v3/iam:troubleshoot", {"accessTuple": access}), 400,
                            "INVALID_ARGUMENT")


# ---------------------------------------------------------------- the chain

def chain(api: Api, body: dict[str, Any], token: str | None = None) -> Any:
    return api.call("POST", "/keyless/v1/iam:troubleshootChain", body, token=token)


def test_the_failing_hop_of_a_chain_is_named(api: Api) -> None:
    first = api.create_sa("hop-one")
    second = api.create_sa("hop-two")
    target = api.create_sa("hop-target")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{first['email']}", "roles/iam.serviceAccountTokenCreator",
                    "user:gina@example.com")
    # second does not let first delegate; target lets second mint.
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target['email']}", TOKEN_CREATOR,
                    f"serviceAccount:{second['email']}")
    r = chain(api, {"principal": "user:gina@example.com", "delegates": [first["email"], second["email"]],
                    "serviceAccount": target["email"], "method": "generateAccessToken"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["overallAccessState"] == "CANNOT_ACCESS"
    assert answer["failingHop"] == 2
    hops = answer["hops"]
    assert [h["permission"] for h in hops] == ["iam.serviceAccounts.implicitDelegation"] * 2 + [
        "iam.serviceAccounts.getAccessToken"]
    assert [h["overallAccessState"] for h in hops] == ["CAN_ACCESS", "CANNOT_ACCESS", "CAN_ACCESS"]
    assert hops[1]["principal"] == f"serviceAccount:{first['email']}"
    assert "explainedPolicies" in hops[1]["allowPolicyExplanation"]


def test_a_missing_account_on_the_chain_is_its_failing_hop(api: Api) -> None:
    target = api.create_sa("lonely-target")
    r = chain(api, {"principal": "user:hank@example.com", "delegates": [f"ghost@{PROJECT}.iam.gserviceaccount.com"],
                    "serviceAccount": target["email"]})
    answer = r.json()
    assert answer["failingHop"] == 1
    assert answer["hops"][0]["reason"] == "ACCOUNT_NOT_FOUND"


def test_the_chain_is_explained_only_to_who_may_read_its_policies(api: Api) -> None:
    target = api.create_sa("guarded-target")
    stranger = user_token(api, "ivan@example.com")
    body = {"principal": "user:ivan@example.com", "serviceAccount": target["email"]}
    assert_google_error(chain(api, body, stranger), 403, "PERMISSION_DENIED")
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/iam.securityReviewer", "user:judy@example.com")
    reviewer = user_token(api, "judy@example.com")
    answer = chain(api, body, reviewer).json()
    assert answer["failingHop"] == 1
    assert answer["hops"][0]["allowPolicyExplanation"]["explainedPolicies"][1]["allowAccessState"] == \
        "ALLOW_ACCESS_STATE_NOT_GRANTED"


def test_a_bad_chain_request_is_a_google_error(api: Api) -> None:
    target = api.create_sa("bad-chain")
    for body in ({"principal": "user:a@example.com"},
                 {"principal": "user:a@example.com", "serviceAccount": target["email"], "method": "mintAll"},
                 {"serviceAccount": target["email"]},
                 {"principal": "user:a@example.com", "serviceAccount": target["email"], "delegates": "x"}):
        assert_google_error(chain(api, body), 400, "INVALID_ARGUMENT")


# ---------------------------------------------------------------- Policy Analyzer

def analyze(api: Api, token: str | None = None, **query: Any) -> Any:
    params = [(f"analysisQuery.{k.replace('__', '.')}", v) for k, v in query.items()]
    return api.call("GET", f"/v1/projects/{PROJECT}:analyzeIamPolicy", params=params, token=token)


def test_analyze_by_identity_finds_direct_and_group_bindings(api: Api) -> None:
    sa = api.create_sa("analyzed")
    api.ok("PUT", "/keyless/v1/groups/ops@example.com", {"members": ["user:kim@example.com"]})
    api.add_binding(f"/v1/projects/-/serviceAccounts/{sa['email']}", TOKEN_CREATOR, "group:ops@example.com")
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", "user:kim@example.com")
    r = analyze(api, identitySelector__identity="user:kim@example.com")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["fullyExplored"] is True
    results = answer["mainAnalysis"]["analysisResults"]
    roles_found = {(x["iamBinding"]["role"], x["attachedResourceFullName"].split("/")[2]) for x in results}
    assert ("roles/iam.serviceAccountTokenCreator", "iam.googleapis.com") in roles_found
    assert ("roles/viewer", "cloudresourcemanager.googleapis.com") in roles_found
    for result in results:
        assert result["identityList"]["identities"] == [{"name": "user:kim@example.com"}]


def test_analyze_by_resource_and_permission_includes_the_projects_bindings(api: Api) -> None:
    sa = api.create_sa("analyzed-resource")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{sa['email']}", TOKEN_CREATOR, "user:lee@example.com",
                    condition=PAST)
    api.add_binding(f"/v1/projects/{PROJECT}", TOKEN_CREATOR, "user:max@example.com")
    answer = analyze(api, resourceSelector__fullResourceName=account_name(sa["email"]),
                     accessSelector__permissions="iam.serviceAccounts.getAccessToken",
                     options__expandGroups="false").json()
    results = answer["mainAnalysis"]["analysisResults"]
    members = {m for x in results for m in x["iamBinding"]["members"]}
    assert {"user:lee@example.com", "user:max@example.com"} <= members
    conditional = next(x for x in results if "user:lee@example.com" in x["iamBinding"]["members"])
    assert conditional["accessControlLists"][0]["conditionEvaluation"] == {"evaluationValue": "CONDITIONAL"}
    assert conditional["accessControlLists"][0]["accesses"] == [{"permission": "iam.serviceAccounts.getAccessToken"}]
    # At a given time the condition is decided: false leaves the binding out.
    now = analyze(api, resourceSelector__fullResourceName=account_name(sa["email"]),
                  accessSelector__permissions="iam.serviceAccounts.getAccessToken",
                  conditionContext__accessTime="2030-01-01T00:00:00Z").json()
    assert not any("user:lee@example.com" in x["iamBinding"]["members"] for x in now["mainAnalysis"]["analysisResults"])


def test_analyze_expands_groups_when_asked(api: Api) -> None:
    api.ok("PUT", "/keyless/v1/groups/qa@example.com", {"members": ["user:nia@example.com"]})
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/iam.securityReviewer", "group:qa@example.com")
    answer = analyze(api, accessSelector__roles="roles/iam.securityReviewer", options__expandGroups="true",
                     options__outputGroupEdges="true").json()
    result = answer["mainAnalysis"]["analysisResults"][0]
    assert {"name": "user:nia@example.com"} in result["identityList"]["identities"]
    assert {"sourceNode": "group:qa@example.com", "targetNode": "user:nia@example.com"} in \
        result["identityList"]["groupEdges"]


def test_analyze_needs_the_projects_policy(api: Api) -> None:
    token = user_token(api, "olga@example.com")
    assert_google_error(analyze(api, token, identitySelector__identity="user:olga@example.com"), 403,
                        "PERMISSION_DENIED")
    assert_google_error(analyze(api, identitySelector__identity="nobody"), 400, "INVALID_ARGUMENT")


# ---------------------------------------------------------------- who can impersonate

def test_who_can_impersonate_follows_chains_and_groups(api: Api) -> None:
    target = api.create_sa("crown-jewel")
    middle = api.create_sa("middle-man")
    relay = api.create_sa("relay-account")
    api.ok("PUT", "/keyless/v1/groups/sre@example.com", {"members": ["user:pat@example.com"]})
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target['email']}", TOKEN_CREATOR,
                    f"serviceAccount:{middle['email']}")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{middle['email']}", TOKEN_CREATOR, "group:sre@example.com")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{middle['email']}", "roles/iam.serviceAccountTokenCreator",
                    f"serviceAccount:{relay['email']}", condition=PAST)
    r = api.call("GET", f"/keyless/v1/serviceAccounts/{target['email']}:whoCanImpersonate")
    assert r.status_code == 200, r.text
    found = {p["principal"]: p for p in r.json()["principals"]}
    assert [e["serviceAccount"] for e in found[f"serviceAccount:{middle['email']}"]["path"]] == [target["email"]]
    pat = found["user:pat@example.com"]
    assert [(e["principal"], e["serviceAccount"]) for e in pat["path"]] == [
        ("user:pat@example.com", middle["email"]), (f"serviceAccount:{middle['email']}", target["email"])]
    assert pat["path"][0]["via"] == "group:sre@example.com"
    assert pat["conditional"] is False
    assert found[f"serviceAccount:{relay['email']}"]["conditional"] is True


def test_who_can_impersonate_is_refused_to_who_may_not_read_the_policy(api: Api) -> None:
    target = api.create_sa("secret-target")
    token = user_token(api, "quinn@example.com")
    r = api.call("GET", f"/keyless/v1/serviceAccounts/{target['email']}:whoCanImpersonate", token=token)
    assert_google_error(r, 403, "PERMISSION_DENIED")
