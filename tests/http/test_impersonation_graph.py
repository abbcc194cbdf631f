"""``GET /keyless/v1/projects/{project}:impersonationGraph``: the project's impersonation graph in one answer
(nodes, and edges by index: grants on accounts and on projects, conditional ones marked, group memberships),
the chains into the project followed across projects, and only the policies the caller may read."""

from __future__ import annotations

from typing import Any

from tests.http.helpers import PROJECT, TOKEN_CREATOR, Api, assert_google_error
from tests.http.test_troubleshoot import PAST, user_token

GRAPH = f"/keyless/v1/projects/{PROJECT}:impersonationGraph"


def graph(api: Api, token: str | None = None, path: str = GRAPH) -> dict[str, Any]:
    r = api.call("GET", path, token=token)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def edges(answer: dict[str, Any]) -> set[tuple[str, str, str, str | None]]:
    """Each grant as (source, target, role, condition title or None)."""
    nodes, roles, conditions = answer["nodes"], answer["roles"], answer["conditions"]
    return {(nodes[e["source"]]["id"], nodes[e["target"]]["id"], roles[e["role"]]["name"],
             conditions[e["condition"]]["title"] if "condition" in e else None) for e in answer["edges"]}


def memberships(answer: dict[str, Any]) -> set[tuple[str, str]]:
    nodes = answer["nodes"]
    return {(nodes[e["source"]]["id"], nodes[e["target"]]["id"]) for e in answer["memberships"]}


def test_a_grant_a_group_a_project_grant_and_a_chain_from_another_project_are_edges(api: Api) -> None:
    target = api.create_sa("graph-target")
    idle = api.create_sa("graph-idle")
    api.ok("POST", "/keyless/v1/projects", {"projectId": "graph-other"})
    relay = api.create_sa("graph-relay", project="graph-other")
    api.ok("PUT", "/keyless/v1/groups/ops@example.com", {"members": ["user:kim@example.com"]})
    on_target = f"/v1/projects/-/serviceAccounts/{target['email']}"
    api.add_binding(on_target, TOKEN_CREATOR, "user:alice@example.com")
    api.add_binding(on_target, TOKEN_CREATOR, "group:ops@example.com")
    api.add_binding(on_target, "roles/iam.serviceAccountOpenIdTokenCreator", f"serviceAccount:{relay['email']}")
    api.add_binding(on_target, "roles/viewer", "user:onlooker@example.com")  # gives no credentials: no edge
    api.add_binding(f"/v1/projects/-/serviceAccounts/{relay['email']}", TOKEN_CREATOR, "user:via@example.com")
    api.add_binding(f"/v1/projects/{PROJECT}", TOKEN_CREATOR, "user:proj@example.com")

    answer = graph(api)
    assert answer["project"] == PROJECT
    assert answer["fullyExplored"] is True and "unexplored" not in answer
    node = {n["id"]: n for n in answer["nodes"]}
    assert len(node) == len(answer["nodes"])  # each node once
    assert node[f"serviceAccount:{target['email']}"] == {"id": f"serviceAccount:{target['email']}",
                                                         "kind": "serviceAccount", "project": PROJECT}
    assert node[f"serviceAccount:{idle['email']}"]["kind"] == "serviceAccount"  # every account of the project
    assert node[f"serviceAccount:{relay['email']}"]["project"] == "graph-other"
    assert node["group:ops@example.com"]["kind"] == "group"
    assert node[f"projects/{PROJECT}"] == {"id": f"projects/{PROJECT}", "kind": "project", "project": PROJECT}
    found = edges(answer)
    sa = f"serviceAccount:{target['email']}"
    assert {("user:alice@example.com", sa, TOKEN_CREATOR, None),
            ("group:ops@example.com", sa, TOKEN_CREATOR, None),
            (f"serviceAccount:{relay['email']}", sa, "roles/iam.serviceAccountOpenIdTokenCreator", None),
            ("user:via@example.com", f"serviceAccount:{relay['email']}", TOKEN_CREATOR, None),
            ("user:proj@example.com", f"projects/{PROJECT}", TOKEN_CREATOR, None)} <= found
    assert not any(source == "user:onlooker@example.com" for source, *_ in found)
    assert ("user:kim@example.com", "group:ops@example.com") in memberships(answer)
    role = next(r for r in answer["roles"] if r["name"] == "roles/iam.serviceAccountOpenIdTokenCreator")
    assert role["permissions"] == ["iam.serviceAccounts.getOpenIdToken"]
    assert len(answer["roles"]) == len({r["name"] for r in answer["roles"]})  # each role once


def test_a_conditional_grant_is_marked_with_its_condition(api: Api) -> None:
    target = api.create_sa("graph-cond")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target['email']}", TOKEN_CREATOR, "user:lee@example.com",
                    condition=PAST)
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target['email']}", TOKEN_CREATOR, "user:max@example.com")
    answer = graph(api)
    sa = f"serviceAccount:{target['email']}"
    assert ("user:lee@example.com", sa, TOKEN_CREATOR, PAST["title"]) in edges(answer)
    assert ("user:max@example.com", sa, TOKEN_CREATOR, None) in edges(answer)
    assert PAST in answer["conditions"]


def test_a_caller_sees_only_the_policies_it_may_read_and_is_told_what_was_left_out(api: Api) -> None:
    readable, hidden = api.create_sa("graph-readable"), api.create_sa("graph-hidden")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{readable['email']}", TOKEN_CREATOR, "user:seen@example.com")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{hidden['email']}", TOKEN_CREATOR, "user:unseen@example.com")
    api.add_binding(f"/v1/projects/{PROJECT}", TOKEN_CREATOR, "user:proj@example.com")
    token = user_token(api, "rita@example.com")
    # Nothing on the project: not even its accounts may be listed.
    assert_google_error(api.call("GET", GRAPH, token=token), 403, "PERMISSION_DENIED")
    # Listing the accounts, not reading any policy: every account a node, no edge, every policy left out.
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/iam.serviceAccountKeyAdmin", "user:rita@example.com")
    blind = graph(api, token)
    assert edges(blind) == set()
    assert blind["fullyExplored"] is False
    assert {f"projects/{PROJECT}", readable["email"], hidden["email"]} <= set(blind["unexplored"])
    # The project's policy (roles/viewer) and one account's (roles/iam.securityReviewer on it).
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", "user:rita@example.com")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{readable['email']}", "roles/iam.securityReviewer",
                    "user:rita@example.com")
    answer = graph(api, token)
    found = {(source, target) for source, target, _, _ in edges(answer)}
    assert ("user:seen@example.com", f"serviceAccount:{readable['email']}") in found
    assert ("user:proj@example.com", f"projects/{PROJECT}") in found
    assert not any(source == "user:unseen@example.com" for source, _ in found)
    assert answer["fullyExplored"] is False
    assert hidden["email"] in answer["unexplored"]
    assert readable["email"] not in answer["unexplored"] and f"projects/{PROJECT}" not in answer["unexplored"]
    assert f"serviceAccount:{hidden['email']}" in {n["id"] for n in answer["nodes"]}
    # The owner sees everything.
    assert ("user:unseen@example.com", f"serviceAccount:{hidden['email']}", TOKEN_CREATOR, None) in edges(graph(api))


def test_bad_input_and_no_credentials_are_googles_errors(api: Api) -> None:
    for bad in ("Not_A_Project", "-", "ab"):
        assert_google_error(api.call("GET", f"/keyless/v1/projects/{bad}:impersonationGraph"), 400,
                            "INVALID_ARGUMENT")
    assert_google_error(api.call("GET", "/keyless/v1/projects/no-such-project:impersonationGraph"), 404,
                        "NOT_FOUND")
    assert_google_error(api.call("GET", GRAPH, auth=False), 401, "UNAUTHENTICATED")
    assert_google_error(api.call("GET", GRAPH, token="ya29.not-a-token"), 401, "UNAUTHENTICATED")
    assert_google_error(api.call("POST", GRAPH, {}), 405, "UNIMPLEMENTED")
