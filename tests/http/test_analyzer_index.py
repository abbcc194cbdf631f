"""The analyzer's index of the stored state (service/analyzer.py): built once per state generation and shared by
every query of it, the policies whose etag did not move reused from the index before. Whatever a write changes
(a binding, a group, a project's policy, an account) is in the next answer."""

from __future__ import annotations

from typing import Any

from keyless.storage.cache import request_scope
from tests.http.helpers import PROJECT, TOKEN_CREATOR, Api


def who(api: Api, email: str) -> dict[str, Any]:
    r = api.call("GET", f"/keyless/v1/serviceAccounts/{email}:whoCanImpersonate")
    assert r.status_code == 200, r.text
    return {p["principal"]: p for p in r.json()["principals"]}


def analyzed_roles(api: Api, identity: str) -> set[str]:
    r = api.call("GET", f"/v1/projects/{PROJECT}:analyzeIamPolicy",
                 params=[("analysisQuery.identitySelector.identity", identity)])
    assert r.status_code == 200, r.text
    return {x["iamBinding"]["role"] for x in r.json()["mainAnalysis"]["analysisResults"]}


def set_bindings(api: Api, resource_path: str, bindings: list[dict[str, Any]]) -> None:
    policy = api.ok("POST", f"{resource_path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    api.ok("POST", f"{resource_path}:setIamPolicy", {"policy": {"bindings": bindings, "etag": policy["etag"]}})


def test_a_grant_and_its_removal_are_in_the_next_answer(api: Api) -> None:
    target = api.create_sa("index-target")
    path = f"/v1/projects/-/serviceAccounts/{target['email']}"
    assert "user:new@example.com" not in who(api, target["email"])
    assert analyzed_roles(api, "user:new@example.com") == set()
    api.add_binding(path, TOKEN_CREATOR, "user:new@example.com")
    assert who(api, target["email"])["user:new@example.com"]["path"][0]["serviceAccount"] == target["email"]
    assert analyzed_roles(api, "user:new@example.com") == {TOKEN_CREATOR}
    set_bindings(api, path, [])
    assert "user:new@example.com" not in who(api, target["email"])
    assert analyzed_roles(api, "user:new@example.com") == set()


def test_a_group_change_is_in_the_next_answer(api: Api) -> None:
    target = api.create_sa("index-group-target")
    api.ok("PUT", "/keyless/v1/groups/rota@example.com", {"members": ["user:ann@example.com"]})
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target['email']}", TOKEN_CREATOR, "group:rota@example.com")
    assert who(api, target["email"])["user:ann@example.com"]["path"][0]["via"] == "group:rota@example.com"
    api.ok("PUT", "/keyless/v1/groups/rota@example.com", {"members": ["user:ben@example.com"]})
    found = who(api, target["email"])
    assert "user:ann@example.com" not in found
    assert found["user:ben@example.com"]["path"][0]["via"] == "group:rota@example.com"
    assert analyzed_roles(api, "user:ben@example.com") == {TOKEN_CREATOR}
    assert analyzed_roles(api, "user:ann@example.com") == set()


def test_a_project_grant_reaches_each_account_of_the_project_until_removed(api: Api) -> None:
    first, second = api.create_sa("index-first"), api.create_sa("index-second")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{first['email']}", TOKEN_CREATOR,
                    f"serviceAccount:{second['email']}")
    assert "user:proj@example.com" not in who(api, first["email"])
    api.add_binding(f"/v1/projects/{PROJECT}", TOKEN_CREATOR, "user:proj@example.com")
    for account in (first, second):
        path = who(api, account["email"])["user:proj@example.com"]["path"]
        assert [(e["serviceAccount"], e["attachedResourceFullName"].split("/")[2]) for e in path] == [
            (account["email"], "cloudresourcemanager.googleapis.com")]
    policy = api.ok("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    kept = [b for b in policy["bindings"] if "user:proj@example.com" not in b["members"]]
    set_bindings(api, f"/v1/projects/{PROJECT}", kept)
    assert "user:proj@example.com" not in who(api, first["email"])
    assert "user:proj@example.com" not in who(api, second["email"])


def test_a_deleted_account_no_longer_relays(api: Api) -> None:
    target, relay = api.create_sa("index-crown"), api.create_sa("index-relay")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target['email']}", TOKEN_CREATOR,
                    f"serviceAccount:{relay['email']}")
    api.add_binding(f"/v1/projects/-/serviceAccounts/{relay['email']}", TOKEN_CREATOR, "user:via@example.com")
    assert [e["serviceAccount"] for e in who(api, target["email"])["user:via@example.com"]["path"]] == [
        relay["email"], target["email"]]
    api.ok("DELETE", f"/v1/projects/-/serviceAccounts/{relay['email']}")  # its own policy is left as it was
    assert "user:via@example.com" not in who(api, target["email"])


def test_the_index_is_shared_until_a_write_and_unchanged_policies_are_not_parsed_again(api: Api) -> None:
    kept, changed = api.create_sa("index-kept"), api.create_sa("index-changed")
    for account in (kept, changed):
        api.add_binding(f"/v1/projects/-/serviceAccounts/{account['email']}", TOKEN_CREATOR, "user:ida@example.com")
    inproc = api.inproc
    analyzer = inproc.keyless.analyzer

    def index() -> Any:
        with request_scope():
            return inproc.run(analyzer.index())

    def binding_of(found: Any, account: dict[str, Any]) -> Any:
        view = found.views[PROJECT]
        return next(a.binding for a in view.bindings if a.account and a.account.email == account["email"])

    before = index()
    assert index() is before  # no write: the same index
    api.add_binding(f"/v1/projects/-/serviceAccounts/{changed['email']}", "roles/viewer", "user:ida@example.com")
    after = index()
    assert after is not before
    assert binding_of(after, kept) is binding_of(before, kept)  # its etag did not move: not parsed again
    assert {a.binding.role for a in after.views[PROJECT].bindings if a.account and
            a.account.email == changed["email"]} == {TOKEN_CREATOR, "roles/viewer"}
    # Outside a request there is no generation to key on: the index is built afresh each time.
    assert inproc.run(analyzer.index()) is not inproc.run(analyzer.index())
