"""Every change of who can do what is audited: the metadata attachment, project creation (and the roles/owner
binding it writes), user changes (add, disable, enable, delete, secret reset, refresh-token revocation), the
clock and the owner's credential at start; refused attempts too. No entry holds a client secret or a refresh
token (nor their stored hashes). In process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from keyless.clock import OffsetClock
from keyless.crypto.keys import MasterKey
from keyless.service.app import Keyless
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
from keyless.storage.base import AuditQuery
from keyless.storage.cache import CachingStore
from keyless.storage.sqlite import SqliteStore
from tests.conftest import InProcess
from tests.http.helpers import Api, assert_google_error

USERS = "/keyless/v1/users"


def _entries(api: Api, method: str, resource: str | None = None) -> list[dict[str, Any]]:
    entries = api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"]
    return [e for e in entries if e["protoPayload"]["methodName"] == method
            and resource in (None, e["protoPayload"]["resourceName"])]


def _one(api: Api, method: str, resource: str | None = None) -> dict[str, Any]:
    found = _entries(api, method, resource)
    assert len(found) == 1, (method, found)
    payload: dict[str, Any] = found[0]["protoPayload"]
    return payload


def test_the_metadata_attachment_is_audited(api: Api) -> None:
    account = api.create_sa("vm-bot")
    api.ok("PUT", "/keyless/v1/metadata", {"serviceAccount": account["email"]})
    payload = _one(api, "keyless.SetMetadataAttachment")
    assert payload["resourceName"] == f"projects/-/serviceAccounts/{account['uniqueId']}"
    assert payload["request"] == {"serviceAccount": account["email"]}
    assert payload["authenticationInfo"]["principalEmail"] == "owner@keyless.local"
    assert payload["authorizationInfo"][0]["permission"] == "keyless.admin"
    assert payload["status"] == {}
    # A refused attachment (no such account) is audited as well.
    bad = api.call("PUT", "/keyless/v1/metadata", {"serviceAccount": "nobody@keyless-dev.iam.gserviceaccount.com"})
    assert_google_error(bad, 400, "INVALID_ARGUMENT")
    assert _entries(api, "keyless.SetMetadataAttachment")[-1]["severity"] == "ERROR"
    # Detaching is a change of who gets tokens too.
    assert api.ok("DELETE", "/keyless/v1/metadata") == {"serviceAccount": ""}
    detached = _one(api, "keyless.DeleteMetadataAttachment")
    assert detached["resourceName"] == f"projects/-/serviceAccounts/{account['uniqueId']}"
    assert detached["authenticationInfo"]["principalEmail"] == "owner@keyless.local"


def test_project_creation_and_its_owner_binding_are_audited(api: Api) -> None:
    api.ok("POST", "/keyless/v1/projects", {"projectId": "audited-proj"})
    payload = _one(api, "keyless.CreateProject")
    assert payload["resourceName"] == "projects/audited-proj"
    assert payload["request"] == {"projectId": "audited-proj"}
    assert payload["response"]["policyDelta"] == {"bindingDeltas": [
        {"action": "ADD", "role": "roles/owner", "member": "user:owner@keyless.local"}]}


def test_a_refused_project_creation_is_audited(api: Api) -> None:
    creds = api.ok("POST", USERS, {"email": "eve@example.com"})["credentials"]
    token = api.refresh_token_grant(creds).json()["access_token"]
    r = api.call("POST", "/keyless/v1/projects", {"projectId": "eve-proj"}, token=token)
    assert_google_error(r, 403, "PERMISSION_DENIED")
    [entry] = _entries(api, "keyless.CreateProject")
    assert entry["severity"] == "ERROR"
    assert entry["protoPayload"]["authenticationInfo"]["principalEmail"] == "eve@example.com"
    assert entry["protoPayload"]["resourceName"] == "projects/eve-proj"


def test_user_changes_are_audited_without_their_secrets(api: Api, inproc: InProcess) -> None:
    added = api.ok("POST", USERS, {"email": "bob@example.com"})["credentials"]
    api.ok("POST", f"{USERS}/bob@example.com:disable", {})
    api.ok("POST", f"{USERS}/bob@example.com:enable", {})
    reset = api.ok("POST", f"{USERS}/bob@example.com:resetSecret", {})["credentials"]
    assert api.client.post("/revoke", data={"token": reset["refresh_token"]}).status_code == 200
    api.ok("DELETE", f"{USERS}/bob@example.com")
    for method in ("keyless.CreateUser", "keyless.DisableUser", "keyless.EnableUser", "keyless.ResetUserSecret",
                   "keyless.DeleteUser"):
        payload = _one(api, method, "users/bob@example.com")
        assert payload["authenticationInfo"]["principalEmail"] == "owner@keyless.local"
        assert payload["status"] == {}, method
    revoked = _entries(api, "oauth2.Revoke")[-1]["protoPayload"]
    assert revoked["resourceName"] == "users/bob@example.com" and revoked["response"]["tokenHash"]

    secrets_seen = [inproc.owner["client_secret"], inproc.owner["refresh_token"]]
    for creds in (added, reset):
        secrets_seen += [creds["client_secret"], creds["refresh_token"]]
    secrets_seen += [hashlib.sha256(s.encode()).hexdigest() for s in list(secrets_seen)]
    rendered = json.dumps(api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"])
    stored = orjson.dumps([e.body for e in inproc.run(inproc.keyless.store.query_audit(AuditQuery(limit=1000)))])
    for secret in secrets_seen:
        assert secret not in rendered and secret.encode() not in stored


@pytest.fixture
def travelling(tmp_path: Path) -> Iterator[Api]:
    """An in-process keyless on the clock ``--allow-time-travel`` gives."""
    loop = asyncio.new_event_loop()
    clock = OffsetClock()
    store = CachingStore(SqliteStore(tmp_path / "keyless.db"))
    loop.run_until_complete(store.open())
    kl = Keyless(store, clock, Settings(public_url="http://testserver"), MasterKey(secrets.token_bytes(32)))
    boot = loop.run_until_complete(bootstrap(kl, tmp_path))
    client = Api(InProcess(kl, clock, json.loads(boot.owner_file.read_text()), loop))  # type: ignore[arg-type]
    yield client
    client.client.close()
    loop.run_until_complete(store.close())
    loop.close()


def test_moving_the_clock_is_audited(travelling: Api) -> None:
    moved = travelling.ok("POST", "/keyless/v1/debug/clock:advance", {"seconds": "3600s"})
    payload = _one(travelling, "keyless.AdvanceClock")
    assert payload["request"] == {"seconds": "3600s"}
    assert payload["response"] == {"now": moved["now"]}
    assert payload["authorizationInfo"][0]["permission"] == "keyless.admin"


def test_a_refused_clock_move_is_audited(api: Api) -> None:
    # The frozen test clock is not the time-travel clock: refused, and the attempt is recorded.
    r = api.call("POST", "/keyless/v1/debug/clock:advance", {"seconds": 60})
    assert_google_error(r, 400, "FAILED_PRECONDITION")
    [entry] = _entries(api, "keyless.AdvanceClock")
    assert entry["severity"] == "ERROR"


def test_the_owner_created_at_first_start_is_audited(api: Api, inproc: InProcess, tmp_path: Path) -> None:
    created = _one(api, "keyless.CreateUser")
    assert created["resourceName"] == "users/owner@keyless.local"
    assert created["response"]["policyDelta"]["bindingDeltas"] == [
        {"action": "ADD", "role": "roles/owner", "member": "user:owner@keyless.local"}]
    # A start that renews a revoked owner credential says so too, and no entry holds the credential.
    api.client.post("/revoke", data={"token": inproc.owner["refresh_token"]})
    renewed = json.loads(inproc.run(bootstrap(inproc.keyless, tmp_path / "restart")).owner_file.read_text())
    assert _one(api_for(inproc, renewed), "keyless.ResetUserSecret")["resourceName"] == "users/owner@keyless.local"
    rendered = json.dumps(api_for(inproc, renewed).ok("GET", "/v1/auditLog", params={"pageSize": 1000}))
    assert renewed["refresh_token"] not in rendered and renewed["client_secret"] not in rendered


def api_for(inproc: InProcess, owner: dict[str, Any]) -> Api:
    return Api(InProcess(inproc.keyless, inproc.clock, owner, inproc.loop))


def test_the_attachment_made_by_serve_attach_is_audited(tmp_path: Path) -> None:
    from tests.conftest import start_server

    first = start_server(tmp_path / "data")
    email = first.create_sa("vm-at-start")
    first.stop()
    again = start_server(tmp_path / "data", "--attach", email)
    try:
        entries = again.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]
        [entry] = [e["protoPayload"] for e in entries if e["protoPayload"]["methodName"] == "keyless.SetMetadataAttachment"]
        assert entry["response"]["serviceAccount"] == email
        assert entry["resourceName"].startswith("projects/-/serviceAccounts/")
        assert not entry.get("authenticationInfo", {}).get("principalEmail")  # keyless itself, at start
    finally:
        again.stop()


def test_only_the_owner_detaches_the_metadata_account(api: Api) -> None:
    account = api.create_sa("vm-kept")
    api.ok("PUT", "/keyless/v1/metadata", {"serviceAccount": account["email"]})
    creds = api.ok("POST", USERS, {"email": "mallory@example.com"})["credentials"]
    token = api.refresh_token_grant(creds).json()["access_token"]
    assert_google_error(api.call("DELETE", "/keyless/v1/metadata", token=token), 403, "PERMISSION_DENIED")
    assert api.ok("GET", "/keyless/v1/metadata") == {"serviceAccount": account["email"]}  # unchanged
    [refused] = _entries(api, "keyless.DeleteMetadataAttachment")
    assert refused["severity"] == "ERROR"
    assert refused["protoPayload"]["authenticationInfo"]["principalEmail"] == "mallory@example.com"
