"""Audit entries: stored as their varying parts, read back (API and ``--audit-log`` sink) as whole Cloud Audit
Logs entries; entries stored whole by earlier versions are read back unchanged."""

from __future__ import annotations

import io
import re
from typing import Any

import orjson

from keyless.storage.base import AuditEntry, AuditQuery
from tests.http.helpers import CLOUD, TOKEN_CREATOR, Api

USER_AGENT = "audit-test/1.0 google-api-python-client"


def _entries(api: Api, method: str) -> list[dict[str, Any]]:
    entries = api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"]
    return [e for e in entries if e["protoPayload"]["methodName"] == method]


def _delegated_token_and_a_denial(api: Api) -> tuple[str, str]:
    target = api.create_sa("audit-target")["email"]
    delegate = api.create_sa("audit-delegate")["email"]
    api.grant_owner_token_creator(delegate)
    api.add_binding(f"/v1/projects/-/serviceAccounts/{target}", TOKEN_CREATOR, f"serviceAccount:{delegate}")
    r = api.call("POST", f"/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                 {"scope": [CLOUD], "delegates": [f"projects/-/serviceAccounts/{delegate}"], "lifetime": "600s"},
                 headers={"User-Agent": USER_AGENT})
    assert r.status_code == 200, r.text
    assert api.call("POST", f"/v1/projects/-/serviceAccounts/{target}:signBlob",
                    {"payload": "aGk="}).status_code == 403
    return target, delegate


def test_a_credential_entry_reads_back_whole(api: Api) -> None:
    _, delegate = _delegated_token_and_a_denial(api)
    [entry] = _entries(api, "GenerateAccessToken")[-1:]
    assert re.fullmatch(r"[0-9a-f]{13,}[0-9a-f]{8}", entry["insertId"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["timestamp"])
    assert entry["severity"] == "NOTICE"
    assert entry["logName"] == "keyless/logs/cloudaudit.googleapis.com%2Fdata_access"
    payload = entry["protoPayload"]
    assert payload["@type"] == "type.googleapis.com/google.cloud.audit.AuditLog"
    assert payload["serviceName"] == "iamcredentials.googleapis.com"
    assert payload["resourceName"].startswith("projects/-/serviceAccounts/")
    assert payload["authenticationInfo"] == {
        "principalEmail": "owner@keyless.local",
        "serviceAccountDelegationInfo": [{"firstPartyPrincipal": {"principalEmail": delegate}}]}
    assert payload["requestMetadata"]["callerSuppliedUserAgent"] == USER_AGENT
    assert payload["requestMetadata"]["callerIp"]
    assert [a["permission"] for a in payload["authorizationInfo"]] == [
        "iam.serviceAccounts.implicitDelegation", "iam.serviceAccounts.getAccessToken"]
    assert all(a["granted"] for a in payload["authorizationInfo"])
    assert payload["request"]["lifetime"] == "600s" and payload["request"]["scope"] == [CLOUD]
    assert set(payload["response"]) == {"tokenHash", "expireTime"}
    assert payload["status"] == {}

    [denied] = _entries(api, "SignBlob")[-1:]
    assert denied["severity"] == "ERROR"
    assert denied["protoPayload"]["status"]["code"] == 7
    assert "iam.serviceAccounts.signBlob" in denied["protoPayload"]["status"]["message"]
    assert denied["protoPayload"]["resourceName"].startswith("projects/-/serviceAccounts/")
    assert "serviceAccountDelegationInfo" not in denied["protoPayload"]["authenticationInfo"]
    assert denied["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] != USER_AGENT


def test_an_entry_is_stored_as_its_varying_parts(api: Api, inproc: Any) -> None:
    _delegated_token_and_a_denial(api)
    stored = inproc.run(inproc.keyless.store.query_audit(AuditQuery(method="GenerateAccessToken")))[-1]
    whole = _entries(api, "GenerateAccessToken")[-1]
    assert stored.insert_id == whole["insertId"]
    assert "protoPayload" not in stored.body and "@type" not in orjson.dumps(stored.body).decode()
    # A delegated grant stores its most (two authorizations, the chain, the request): still under 60%.
    assert len(orjson.dumps(stored.body)) < len(orjson.dumps(whole)) * 0.6


def test_an_entry_stored_whole_reads_back_unchanged(api: Api, inproc: Any) -> None:
    whole = {"insertId": "old-1", "timestamp": "2026-01-02T03:04:05.000006Z", "severity": "NOTICE",
             "logName": "keyless/logs/cloudaudit.googleapis.com%2Fdata_access",
             "protoPayload": {"methodName": "GenerateAccessToken", "serviceName": "iamcredentials.googleapis.com",
                              "authenticationInfo": {"principalEmail": "old@keyless.local"}, "status": {}}}
    inproc.run(inproc.keyless.store.append_audit([AuditEntry(
        insert_id="old-1", timestamp=inproc.clock.now(), method="GenerateAccessToken",
        principal="old@keyless.local", resource="", denied=False, body=whole)]))
    assert [e for e in _entries(api, "GenerateAccessToken") if e["insertId"] == "old-1"] == [whole]


def test_the_sink_gets_the_entries_the_api_reads(api: Api, inproc: Any, monkeypatch: Any) -> None:
    sink = io.StringIO()
    monkeypatch.setattr(inproc.keyless.audit, "_sink", sink)
    _delegated_token_and_a_denial(api)
    streamed = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    read = api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"]
    by_id = {e["insertId"]: e for e in read}
    assert [e["protoPayload"]["methodName"] for e in streamed][-2:] == ["GenerateAccessToken", "SignBlob"]
    assert all(by_id[e["insertId"]] == e for e in streamed)


def test_retention_deletes_entries_older_than_it(api: Api, inproc: Any) -> None:
    """``--audit-retention-days``: what is older goes (in batches), what is younger stays, and the log goes on."""
    audit = inproc.keyless.audit
    _delegated_token_and_a_denial(api)
    old_ids = {e["insertId"] for e in api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"]}
    inproc.clock.advance(2 * 86400)
    target = "audit-target@keyless-dev.iam.gserviceaccount.com"  # the owner may only reach it through the delegate
    denied_now = api.call("POST", f"/v1/projects/-/serviceAccounts/{target}:generateAccessToken", {"scope": [CLOUD]})
    assert denied_now.status_code == 403
    assert inproc.run(audit.prune(86400.0, batch=2)) == len(old_ids)
    left = api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"]
    assert left and not old_ids & {e["insertId"] for e in left}
    assert inproc.run(audit.prune(86400.0)) == 0
