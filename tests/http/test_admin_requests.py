"""REST's parse of IAM admin bodies into the core's typed requests (``keyless.service.admin_requests``): what is
not of the form the request needs (a string, an object, a list of strings, base64) is refused by the adapter,
Google-shaped, naming the field, and nothing changes. What breaks a rule of the core is refused by the core alike
on REST and gRPC (tests/compat/test_grpc_admin.py, ``test_malformed_requests_are_refused_alike_on_both_wires``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.helpers import PROJECT, Api, assert_google_error

COLLECTION = f"/v1/projects/{PROJECT}/serviceAccounts"
TARGET = f"parse-target@{PROJECT}.iam.gserviceaccount.com"
ACCOUNT = f"{COLLECTION}/{TARGET}"

# (the request, its body, what the error message says, the field it names)
MALFORMED: list[tuple[str, str, Any, str, str]] = [
    ("POST", COLLECTION, {"accountId": 12345678}, "accountId is required.", "account_id"),
    ("POST", COLLECTION, {"accountId": "parse-new", "serviceAccount": ["x"]},
     "Invalid value at 'service_account': expected an object.", "service_account"),
    ("POST", COLLECTION, {"accountId": "parse-new", "serviceAccount": {"displayName": 7}},
     "Invalid value at 'service_account.display_name': expected a string.", "service_account.display_name"),
    ("POST", COLLECTION, {"accountId": "parse-new", "serviceAccount": {"owner": "me"}},
     'Unknown name "owner"', "service_account.owner"),
    ("GET", f"{COLLECTION}?pageSize=ten", None, "Invalid value at 'pageSize'", "page_size"),
    ("PATCH", ACCOUNT, {"serviceAccount": {"description": ["x"]}, "updateMask": "description"},
     "Invalid value at 'service_account.description': expected a string.", "service_account.description"),
    ("PATCH", ACCOUNT, {"serviceAccount": {}, "updateMask": ["displayName"]},
     "updateMask is required", "update_mask"),
    ("PUT", ACCOUNT, {"displayName": False}, "Invalid value at 'service_account.display_name': expected a string.",
     "service_account.display_name"),
    ("POST", f"{ACCOUNT}/keys:upload", {"publicKeyData": "!!! not base64 !!!"},
     "publicKeyData is not a base64-encoded PEM X.509 certificate", "public_key_data"),
    ("POST", f"{ACCOUNT}/keys:upload", {"publicKeyData": 5}, "publicKeyData is required", "public_key_data"),
    ("POST", f"{ACCOUNT}:setIamPolicy", {}, "policy is required.", "policy"),
    ("POST", f"{ACCOUNT}:setIamPolicy", {"policy": {}, "updateMask": 3},
     "updateMask must be a comma-separated string.", "updateMask"),
    ("POST", f"{ACCOUNT}:getIamPolicy", {"options": {"requestedPolicyVersion": "three"}},
     "Invalid requestedPolicyVersion", "options.requestedPolicyVersion"),
    ("POST", f"{ACCOUNT}:testIamPermissions", {"permissions": "iam.serviceAccounts.get"},
     "permissions must be a list of strings.", "permissions"),
]


@pytest.mark.parametrize(("method", "path", "body", "says", "field"), MALFORMED,
                         ids=[f"{m} {p.rsplit('/', 1)[-1]} {s[:30]}" for m, p, _b, s, _f in MALFORMED])
def test_malformed_bodies_are_400_naming_the_field(api: Api, method: str, path: str, body: Any, says: str,
                                                   field: str) -> None:
    api.create_sa("parse-target", "Before")
    error = assert_google_error(api.call(method, path, body), 400, "INVALID_ARGUMENT")
    assert says in error["message"]
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    [violation] = bad_request["fieldViolations"]
    assert violation["field"] == field
    after = api.ok("GET", ACCOUNT)
    assert after.get("displayName") == "Before" and "description" not in after  # nothing changed
    assert api.ok("GET", f"{ACCOUNT}/keys?keyTypes=USER_MANAGED").get("keys", []) == []
    assert "bindings" not in api.ok("POST", f"{ACCOUNT}:getIamPolicy", {})
