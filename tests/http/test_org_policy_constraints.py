"""Organization policies over HTTP: Resource Manager v1 and Org Policy v2 as two views of one stored policy, the
effective policy (project, else organization, else the constraint's default), the IAM constraints keyless enforces
(key creation, key upload, key expiry, token lifetime extension), who may set them, and bad input."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from keyless.crypto.keys import generate_key_pair
from keyless.domain.lifetimes import format_timestamp
from tests.http.helpers import CLOUD, PROJECT, Api, assert_google_error

V1 = f"/v1/projects/{PROJECT}"
V2 = f"/v2/projects/{PROJECT}"
CREATION = "constraints/iam.disableServiceAccountKeyCreation"
UPLOAD = "constraints/iam.disableServiceAccountKeyUpload"
EXPIRY = "constraints/iam.serviceAccountKeyExpiryHours"
LIFETIME = "constraints/iam.allowServiceAccountCredentialLifetimeExtension"


def org(api: Api) -> str:
    return f"organizations/{api.inproc.run(api.inproc.keyless.store.get_meta('organization_number'))}"


def v1(api: Api, verb: str, body: dict[str, Any], parent: str = f"projects/{PROJECT}", **kwargs: Any) -> Any:
    return api.call("POST", f"/v1/{parent}:{verb}", body, **kwargs)


def set_v1(api: Api, policy: dict[str, Any], parent: str = f"projects/{PROJECT}") -> dict[str, Any]:
    r = v1(api, "setOrgPolicy", {"policy": policy}, parent)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def enforce(api: Api, constraint: str, enforced: bool, parent: str = f"projects/{PROJECT}") -> dict[str, Any]:
    return set_v1(api, {"constraint": constraint, "booleanPolicy": {"enforced": enforced}}, parent)


def stored(api: Api) -> list[Any]:
    return [api.inproc.run(api.inproc.keyless.store.list_org_policies(r)) for r in (f"projects/{PROJECT}",
                                                                                  "organizations/-")]


def keys_of(api: Api, email: str) -> list[Any]:
    return [k for k in api.ok("GET", f"/v1/projects/-/serviceAccounts/{email}/keys")["keys"]
            if k["keyType"] == "USER_MANAGED"]


def test_v1_and_v2_are_views_of_one_policy(api: Api) -> None:
    assert api.ok("POST", f"{V1}:getOrgPolicy", {"constraint": CREATION}) == {"constraint": CREATION, "etag": "ACAB"}
    set_by_v1 = enforce(api, CREATION, True)
    assert set_by_v1["booleanPolicy"] == {"enforced": True} and set_by_v1["constraint"] == CREATION
    by_v2 = api.ok("GET", f"{V2}/policies/iam.disableServiceAccountKeyCreation")
    assert by_v2 == {"name": f"projects/{PROJECT}/policies/iam.disableServiceAccountKeyCreation",
                     "spec": {"etag": set_by_v1["etag"], "updateTime": set_by_v1["updateTime"],
                              "rules": [{"enforce": True}]},
                     "etag": set_by_v1["etag"]}
    api.ok("PATCH", f"{V2}/policies/iam.allowServiceAccountCredentialLifetimeExtension",
           {"spec": {"rules": [{"values": {"allowedValues": ["a@x.io"], "deniedValues": ["b@x.io"]}}]}})
    listed = api.ok("POST", f"{V1}:getOrgPolicy", {"constraint": LIFETIME})["listPolicy"]
    assert listed == {"allowedValues": ["a@x.io"], "deniedValues": ["b@x.io"]}
    assert {p["constraint"] for p in api.ok("POST", f"{V1}:listOrgPolicies", {})["policies"]} == {CREATION, LIFETIME}
    assert {p["name"].rsplit("/", 1)[1] for p in api.ok("GET", f"{V2}/policies")["policies"]} == {
        "iam.disableServiceAccountKeyCreation", "iam.allowServiceAccountCredentialLifetimeExtension"}
    set_v1(api, {"constraint": LIFETIME, "listPolicy": {"allValues": "DENY"}})
    assert api.ok("GET", f"{V2}/policies/iam.allowServiceAccountCredentialLifetimeExtension")["spec"]["rules"] == [
        {"denyAll": True}]
    restored = set_v1(api, {"constraint": LIFETIME, "restoreDefault": {}})
    assert restored["restoreDefault"] == {} and "listPolicy" not in restored
    assert api.ok("GET", f"{V2}/policies/iam.allowServiceAccountCredentialLifetimeExtension")["spec"]["reset"]
    assert api.ok("POST", f"{V1}:clearOrgPolicy", {"constraint": LIFETIME}) == {}
    assert_google_error(api.call("GET", f"{V2}/policies/iam.allowServiceAccountCredentialLifetimeExtension"), 404,
                        "NOT_FOUND")


def test_the_constraints_keyless_emulates_are_listed(api: Api) -> None:
    names = {CREATION, UPLOAD, EXPIRY, LIFETIME}
    v1_list = api.ok("POST", f"{V1}:listAvailableOrgPolicyConstraints", {})["constraints"]
    assert {c["name"] for c in v1_list} == names
    assert all(c["displayName"] and c["description"] and c["constraintDefault"] in ("ALLOW", "DENY") for c in v1_list)
    by_name = {c["name"]: c for c in api.ok("GET", f"{V2}/constraints")["constraints"]}
    assert set(by_name) == {f"projects/{PROJECT}/{n}" for n in names}
    assert by_name[f"projects/{PROJECT}/{CREATION}"]["booleanConstraint"] == {}
    assert "listConstraint" in by_name[f"projects/{PROJECT}/{EXPIRY}"]


def test_v1_etags_create_only_if_absent_and_refuse_a_stale_write(api: Api) -> None:
    first = set_v1(api, {"constraint": CREATION, "etag": "ACAB", "booleanPolicy": {"enforced": True}})
    assert_google_error(v1(api, "setOrgPolicy", {"policy": {"constraint": CREATION, "etag": "ACAB",
                                                            "booleanPolicy": {}}}), 409, "ABORTED")
    url_safe = first["etag"].replace("+", "-").replace("/", "_").rstrip("=")
    second = set_v1(api, {"constraint": CREATION, "etag": url_safe, "booleanPolicy": {}})
    assert_google_error(v1(api, "setOrgPolicy", {"policy": {"constraint": CREATION, "etag": first["etag"],
                                                            "booleanPolicy": {"enforced": True}}}), 409, "ABORTED")
    assert_google_error(v1(api, "clearOrgPolicy", {"constraint": CREATION, "etag": first["etag"]}), 409, "ABORTED")
    assert api.ok("POST", f"{V1}:getOrgPolicy", {"constraint": CREATION}) == second
    assert api.ok("POST", f"{V1}:clearOrgPolicy", {"constraint": CREATION, "etag": second["etag"]}) == {}


def test_v2_create_is_409_when_a_policy_exists_and_delete_honours_an_etag(api: Api) -> None:
    name = f"projects/{PROJECT}/policies/iam.disableServiceAccountKeyUpload"
    created = api.ok("POST", f"{V2}/policies", {"name": name, "spec": {"rules": [{"enforce": True}]}})
    assert_google_error(api.call("POST", f"{V2}/policies", {"name": name, "spec": {"rules": [{"enforce": False}]}}),
                        409, "ALREADY_EXISTS")
    assert_google_error(api.call("DELETE", f"/v2/{name}", params={"etag": "BwYAAAAAAAA="}), 409, "ABORTED")
    assert api.ok("GET", f"/v2/{name}") == created
    api.ok("DELETE", f"/v2/{name}", params={"etag": created["etag"]})
    assert_google_error(api.call("DELETE", f"/v2/{name}"), 404, "NOT_FOUND")


def test_key_creation_and_upload_are_refused_where_the_constraints_are_enforced(api: Api) -> None:
    email = api.create_sa("keyed-robot")["email"]
    enforce(api, CREATION, True)
    r = api.call("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
    error = assert_google_error(r, 400, "FAILED_PRECONDITION")
    subject = f"projects/{PROJECT}/serviceAccounts/{email}?configvalue={email.replace('@', '%40')}"
    assert error["message"] == "Key creation is not allowed on this service account."
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.PreconditionFailure", "violations": [
        {"type": CREATION, "subject": subject, "description": "Key creation is not allowed on this service account."}]}]
    pair = generate_key_pair("uploaded", api.clock.now())
    upload = {"publicKeyData": base64.b64encode(pair.certificate_pem).decode()}
    enforce(api, UPLOAD, True)
    error = assert_google_error(api.call("POST", f"/v1/projects/-/serviceAccounts/{email}/keys:upload", upload), 400,
                                "FAILED_PRECONDITION")
    assert error["details"][0]["violations"][0]["type"] == UPLOAD
    assert error["details"][0]["violations"][0]["subject"] == subject
    assert keys_of(api, email) == []
    # Not enforced (the project's policy says so): both work again.
    enforce(api, CREATION, False)
    enforce(api, UPLOAD, False)
    api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
    api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys:upload", upload)
    assert len(keys_of(api, email)) == 2


def test_the_project_policy_wins_over_the_organizations(api: Api) -> None:
    email = api.create_sa("org-robot")["email"]
    enforce(api, CREATION, True, org(api))
    assert_google_error(api.call("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {}), 400,
                        "FAILED_PRECONDITION")
    effective = api.ok("POST", f"{V1}:getEffectiveOrgPolicy", {"constraint": CREATION})
    assert effective == {"constraint": CREATION, "booleanPolicy": {"enforced": True}}
    assert api.ok("GET", f"{V2}/policies/iam.disableServiceAccountKeyCreation:getEffectivePolicy")["spec"] == {
        "rules": [{"enforce": True}]}
    enforce(api, CREATION, False)
    api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
    # restoreDefault on the project: the constraint's default (not enforced), whatever the organization says.
    set_v1(api, {"constraint": CREATION, "restoreDefault": {}})
    api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
    assert api.ok("POST", f"{V1}:getEffectiveOrgPolicy", {"constraint": CREATION})["booleanPolicy"] == {}
    # Cleared: the organization's policy applies again.
    api.ok("POST", f"{V1}:clearOrgPolicy", {"constraint": CREATION})
    assert_google_error(api.call("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {}), 400,
                        "FAILED_PRECONDITION")


def test_key_expiry_limits_new_keys(api: Api) -> None:
    email = api.create_sa("expiring-robot")["email"]
    set_v1(api, {"constraint": EXPIRY, "listPolicy": {"allowedValues": ["8h"]}})
    now = api.clock.now()
    created = api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
    assert created["validBeforeTime"] == format_timestamp(now + 8 * 3600)
    pair = generate_key_pair("uploaded", now)
    uploaded = api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys:upload",
                      {"publicKeyData": base64.b64encode(pair.certificate_pem).decode()})
    assert uploaded["validBeforeTime"] == format_timestamp(now + 8 * 3600)
    # An organization value applies where the project sets none.
    api.ok("POST", f"{V1}:clearOrgPolicy", {"constraint": EXPIRY})
    set_v1(api, {"constraint": EXPIRY, "listPolicy": {"allowedValues": ["1h"]}}, org(api))
    assert api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})["validBeforeTime"] == format_timestamp(
        now + 3600)
    set_v1(api, {"constraint": EXPIRY, "listPolicy": {"allValues": "ALLOW"}})
    assert api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})["validBeforeTime"] > format_timestamp(
        now + 365 * 86400)


def test_lifetime_extension_follows_the_effective_policy(api: Api) -> None:
    email = api.create_sa("long-robot")["email"]
    api.grant_owner_token_creator(email)

    def twelve_hours() -> int:
        return api.call("POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                        {"scope": [CLOUD], "lifetime": "43200s"}).status_code

    assert twelve_hours() == 400
    set_v1(api, {"constraint": LIFETIME, "listPolicy": {"allowedValues": [email]}}, org(api))
    assert twelve_hours() == 200
    set_v1(api, {"constraint": LIFETIME, "listPolicy": {"allowedValues": ["other@x.io"]}})
    assert twelve_hours() == 400  # the project's own policy replaces the organization's
    set_v1(api, {"constraint": LIFETIME, "listPolicy": {"allowedValues": ["other@x.io"], "inheritFromParent": True}})
    assert twelve_hours() == 200  # ... unless it inherits from it
    effective = api.ok("POST", f"{V1}:getEffectiveOrgPolicy", {"constraint": LIFETIME})["listPolicy"]
    assert sorted(effective["allowedValues"]) == sorted([email, "other@x.io"])
    set_v1(api, {"constraint": LIFETIME, "listPolicy": {"deniedValues": [email], "inheritFromParent": True}})
    assert twelve_hours() == 400


BAD_V2 = [
    ("iam.serviceAccountKeyExpiryHours", {"rules": [{"values": {"allowedValues": ["7h"]}}]}),
    ("iam.serviceAccountKeyExpiryHours", {"rules": [{"values": {"allowedValues": ["8h", "24h"]}}]}),
    ("iam.serviceAccountKeyExpiryHours", {"rules": [{"values": {"deniedValues": ["8h"]}}]}),
    ("iam.serviceAccountKeyExpiryHours", {"rules": [{"denyAll": True}]}),
    ("iam.disableServiceAccountKeyCreation", {"rules": [{"values": {"allowedValues": ["x"]}}]}),
    ("iam.disableServiceAccountKeyCreation", {"rules": [{"enforce": "true"}]}),
    ("iam.disableServiceAccountKeyCreation", {"rules": [{"enforce": True}, {"enforce": False}]}),
    ("iam.disableServiceAccountKeyCreation", {"rules": [{"enforce": True}], "inheritFromParent": True}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"enforce": True}]}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"allowAll": True, "denyAll": True}]}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"allowAll": True},
                                                                      {"values": {"allowedValues": ["a"]}}]}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"values": {}}]}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"values": {"allowedValues": [""]}}]}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"values": {"allowedValues": ["x" * 2000]}}]}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"allowAll": True, "condition": {
        "expression": "resource.matchTag('a/b', 'c')"}}]}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"allowAll": True}], "reset": True}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": [{"allowAll": True}], "color": "red"}),
    ("iam.allowServiceAccountCredentialLifetimeExtension", {"rules": []}),
    ("compute.vmExternalIpAccess", {"rules": [{"allowAll": True}]}),
]


@pytest.mark.parametrize(("constraint", "spec"), BAD_V2)
def test_a_bad_v2_policy_is_400_and_changes_nothing(api: Api, constraint: str, spec: dict[str, Any]) -> None:
    enforce(api, CREATION, True)
    before = stored(api)
    assert_google_error(api.call("PATCH", f"{V2}/policies/{constraint}", {"spec": spec}), 400, "INVALID_ARGUMENT")
    assert_google_error(api.call("POST", f"{V2}/policies", {"name": f"projects/{PROJECT}/policies/{constraint}",
                                                            "spec": spec}), 400, "INVALID_ARGUMENT")
    assert stored(api) == before


BAD_V1 = [
    {"constraint": CREATION},
    {"constraint": CREATION, "booleanPolicy": {"enforced": True}, "restoreDefault": {}},
    {"constraint": CREATION, "listPolicy": {"allowedValues": ["a"]}},
    {"constraint": LIFETIME, "booleanPolicy": {"enforced": True}},
    {"constraint": LIFETIME, "listPolicy": {"allValues": "ALLOW", "allowedValues": ["a"]}},
    {"constraint": LIFETIME, "listPolicy": {"allValues": "SOME"}},
    {"constraint": LIFETIME, "listPolicy": {}},
    {"constraint": LIFETIME, "listPolicy": {"allowedValues": "a@x.io"}},
    {"constraint": EXPIRY, "listPolicy": {"allowedValues": ["8h", "1h"]}},
    {"constraint": "constraints/compute.vmExternalIpAccess", "listPolicy": {"allValues": "ALLOW"}},
    {"booleanPolicy": {}},
    {"constraint": CREATION, "booleanPolicy": {"enforced": True}, "etag": "not base64!"},
    {"constraint": CREATION, "booleanPolicy": {"enforced": True}, "spec": {}},
]


@pytest.mark.parametrize("policy", BAD_V1)
def test_a_bad_v1_policy_is_400_and_changes_nothing(api: Api, policy: dict[str, Any]) -> None:
    enforce(api, CREATION, True)
    before = stored(api)
    assert_google_error(v1(api, "setOrgPolicy", {"policy": policy}), 400, "INVALID_ARGUMENT")
    assert stored(api) == before
    for verb, body in (("getOrgPolicy", {"constraint": 3}), ("clearOrgPolicy", {"constraint": "nope"}),
                       ("setOrgPolicy", {"policy": "x"}), ("listOrgPolicies", {"filter": "x"})):
        assert_google_error(v1(api, verb, body), 400, "INVALID_ARGUMENT")
    assert stored(api) == before


def test_who_may_read_and_set_org_policies(api: Api) -> None:
    creds = api.ok("POST", "/keyless/v1/users", {"email": "viewer@example.com"})["credentials"]
    api.add_binding(V1, "roles/viewer", "user:viewer@example.com")
    viewer = api.refresh_token_grant(creds).json()["access_token"]
    enforce(api, CREATION, True)
    before = stored(api)
    # A viewer reads a project's policies and constraints ...
    api.ok("POST", f"{V1}:getOrgPolicy", {"constraint": CREATION}, token=viewer)
    api.ok("GET", f"{V2}/policies/iam.disableServiceAccountKeyCreation", token=viewer)
    api.ok("GET", f"{V2}/constraints", token=viewer)
    # ... and changes none.
    for r in (v1(api, "setOrgPolicy", {"policy": {"constraint": CREATION, "booleanPolicy": {}}}, token=viewer),
              v1(api, "clearOrgPolicy", {"constraint": CREATION}, token=viewer),
              api.call("PATCH", f"{V2}/policies/iam.disableServiceAccountKeyCreation",
                       {"spec": {"rules": [{"enforce": False}]}}, token=viewer),
              api.call("DELETE", f"{V2}/policies/iam.disableServiceAccountKeyCreation", token=viewer)):
        assert_google_error(r, 403, "PERMISSION_DENIED")
    # The organization's policies are the owner's alone, to read as to write.
    for r in (v1(api, "getOrgPolicy", {"constraint": CREATION}, org(api), token=viewer),
              v1(api, "setOrgPolicy", {"policy": {"constraint": CREATION, "booleanPolicy": {}}}, org(api),
                 token=viewer),
              api.call("GET", f"/v2/{org(api)}/policies", token=viewer)):
        error = assert_google_error(r, 403, "PERMISSION_DENIED")
        assert error["details"][0]["metadata"]["resource"] == org(api)
    assert stored(api) == before
    # Other organizations and folders do not exist here.
    assert_google_error(v1(api, "getOrgPolicy", {"constraint": CREATION}, "organizations/1"), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", "/v2/organizations/1/policies"), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", "/v2/projects/no-such-project/policies"), 404, "NOT_FOUND")
