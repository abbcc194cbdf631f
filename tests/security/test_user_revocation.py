"""User credentials can be revoked: ``/revoke`` takes refresh tokens, and the owner can disable, enable, delete
and reset (new client secret and refresh token) a user. What is revoked stops working at once, on every
replica: the access tokens already issued included. In process, on a frozen clock; the replica case with two
``Keyless`` objects on one SQLite database, and the CLI against a real server."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from keyless.clock import FrozenClock
from keyless.crypto.keys import MasterKey
from keyless.service.app import Keyless
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
from keyless.storage.cache import CachingStore
from keyless.storage.sqlite import SqliteStore
from tests.conftest import InProcess, Server
from tests.http.helpers import CLOUD, PROJECT, TOKEN_CREATOR, Api, assert_google_error, assert_oauth_error

USERS = "/keyless/v1/users"


def _add_user(api: Api, email: str, role: str = "roles/viewer") -> dict[str, Any]:
    creds: dict[str, Any] = api.ok("POST", USERS, {"email": email})["credentials"]
    api.add_binding(f"/v1/projects/{PROJECT}", role, f"user:{email}")
    return creds


def _token(api: Api, creds: dict[str, Any]) -> str:
    r = api.refresh_token_grant(creds)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _works(api: Api, token: str) -> bool:
    """True when the token is accepted (a viewer may read the project), False when it is refused (401)."""
    r = api.call("GET", f"/v1/projects/{PROJECT}", token=token)
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


# ---------------------------------------------------------------- /revoke


@pytest.mark.parametrize("path", ["/revoke", "/o/oauth2/revoke"])
def test_revoking_a_refresh_token_ends_it_and_its_access_tokens(api: Api, path: str) -> None:
    alice = _add_user(api, "alice@example.com")
    token = _token(api, alice)
    assert _works(api, token)

    r = api.client.post(path, data={"token": alice["refresh_token"]})
    assert (r.status_code, r.json()) == (200, {})
    assert_oauth_error(api.refresh_token_grant(alice), 400, "invalid_grant")
    assert not _works(api, token)
    # Revoked already: Google's answer for a token it no longer knows.
    assert_oauth_error(api.client.post(path, data={"token": alice["refresh_token"]}), 400, "invalid_token")


def test_revoke_takes_the_refresh_token_in_the_query_too(api: Api) -> None:
    alice = _add_user(api, "alice@example.com")
    r = api.client.post("/revoke", params={"token": alice["refresh_token"]})
    assert (r.status_code, r.json()) == (200, {})
    assert_oauth_error(api.refresh_token_grant(alice), 400, "invalid_grant")


@pytest.mark.parametrize("token", ["1//klnot-a-refresh-token", "garbage", "ya29.forged.mac"])
def test_revoking_an_unknown_token_is_invalid_token_and_changes_nothing(api: Api, token: str) -> None:
    alice = _add_user(api, "alice@example.com")
    assert_oauth_error(api.client.post("/revoke", data={"token": token}), 400, "invalid_token")
    assert_oauth_error(api.client.post("/revoke", data={}), 400, "invalid_request")
    assert _works(api, _token(api, alice))


# ---------------------------------------------------------------- disable / enable / delete / reset


def test_a_disabled_user_gets_no_token_and_its_tokens_stop_working(api: Api) -> None:
    bob = _add_user(api, "bob@example.com")
    token = _token(api, bob)
    assert _works(api, token)

    assert api.ok("POST", f"{USERS}/bob@example.com:disable", {}) == {
        "email": "bob@example.com", "clientId": bob["client_id"], "disabled": True, "hasPassword": False}
    assert not _works(api, token)
    assert_oauth_error(api.refresh_token_grant(bob), 400, "invalid_grant")
    assert api.ok("GET", f"{USERS}/bob@example.com")["disabled"] is True

    assert api.ok("POST", f"{USERS}/bob@example.com:enable", {})["disabled"] is False
    assert _works(api, token)
    assert _works(api, _token(api, bob))


def test_a_deleted_user_is_gone_and_a_new_user_of_that_email_inherits_nothing(api: Api) -> None:
    carol = _add_user(api, "carol@example.com")
    token = _token(api, carol)
    assert api.ok("DELETE", f"{USERS}/carol@example.com") == {}
    assert not _works(api, token)
    assert_oauth_error(api.refresh_token_grant(carol), 400, "invalid_grant")
    assert_google_error(api.call("GET", f"{USERS}/carol@example.com"), 404, "NOT_FOUND")
    assert "carol@example.com" not in [u["email"] for u in api.ok("GET", USERS)["users"]]
    policy = api.ok("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {})
    viewers = next(b["members"] for b in policy["bindings"] if b["role"] == "roles/viewer")
    assert viewers[0].startswith("deleted:user:carol@example.com?uid=")

    again = api.ok("POST", USERS, {"email": "carol@example.com"})["credentials"]
    r = api.call("GET", f"/v1/projects/{PROJECT}", token=_token(api, again))
    assert_google_error(r, 403, "PERMISSION_DENIED")


def test_resetting_a_secret_replaces_the_credentials(api: Api) -> None:
    dave = _add_user(api, "dave@example.com")
    token = _token(api, dave)
    out = api.ok("POST", f"{USERS}/dave@example.com:resetSecret", {})
    new = out["credentials"]
    assert out["user"] == {"email": "dave@example.com", "clientId": dave["client_id"], "disabled": False,
                           "hasPassword": False}
    assert new["type"] == "authorized_user" and new["account"] == "dave@example.com"
    assert new["client_secret"] != dave["client_secret"] and new["refresh_token"] != dave["refresh_token"]

    assert not _works(api, token)
    assert_oauth_error(api.refresh_token_grant(dave), 400, "invalid_grant")
    assert_oauth_error(api.refresh_token_grant({**new, "client_secret": dave["client_secret"]}), 401,
                       "invalid_client")
    assert _works(api, _token(api, new))


def test_the_owner_can_be_reset_but_not_disabled_or_deleted(api: Api, inproc: InProcess, tmp_path: Path) -> None:
    owner = inproc.owner["account"]
    for method, path in (("POST", f"{USERS}/{owner}:disable"), ("DELETE", f"{USERS}/{owner}")):
        assert_google_error(api.call(method, path, {} if method == "POST" else None), 400, "FAILED_PRECONDITION")
    new = api.ok("POST", f"{USERS}/{owner}:resetSecret", {})["credentials"]
    assert_oauth_error(api.refresh_token_grant(inproc.owner), 400, "invalid_grant")
    assert api.refresh_token_grant(new).status_code == 200
    # The next start writes owner.json with the new credentials (the stored copy was replaced too).
    restart = tmp_path / "restart"
    boot = inproc.run(bootstrap(inproc.keyless, restart))
    assert json.loads(boot.owner_file.read_text()) == new


def test_a_revoked_owner_refresh_token_is_renewed_at_the_next_start(api: Api, inproc: InProcess,
                                                                    tmp_path: Path) -> None:
    # Whoever holds the master key can write the owner's file: after a revocation that is the way back in.
    assert api.client.post("/revoke", data={"token": inproc.owner["refresh_token"]}).status_code == 200
    assert_oauth_error(api.refresh_token_grant(), 400, "invalid_grant")
    boot = inproc.run(bootstrap(inproc.keyless, tmp_path / "restart"))
    renewed = json.loads(boot.owner_file.read_text())
    assert renewed["refresh_token"] != inproc.owner["refresh_token"]
    assert api.refresh_token_grant(renewed).status_code == 200


def test_user_changes_need_the_owner_and_an_existing_user(api: Api) -> None:
    erin = _add_user(api, "erin@example.com", role="roles/iam.serviceAccountAdmin")
    token = _token(api, erin)
    for method, path in (("POST", f"{USERS}/erin@example.com:disable"), ("POST", f"{USERS}/erin@example.com:enable"),
                         ("POST", f"{USERS}/erin@example.com:resetSecret"), ("DELETE", f"{USERS}/erin@example.com"),
                         ("GET", f"{USERS}/erin@example.com")):
        assert_google_error(api.call(method, path, token=token), 403, "PERMISSION_DENIED")
        missing = path.replace("erin@", "nobody@")
        assert_google_error(api.call(method, missing), 404, "NOT_FOUND")
    assert_google_error(api.call("POST", f"{USERS}/erin@example.com:explode", {}), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", f"{USERS}/erin@example.com:disable"), 405, "UNIMPLEMENTED")
    assert_google_error(api.call("POST", f"{USERS}/erin@example.com:disable", {"bogus": 1}), 400,
                        "INVALID_ARGUMENT")
    assert _works(api, token)


# ---------------------------------------------------------------- two replicas, one database


class Replica:
    def __init__(self, path: Path, master: MasterKey, clock: FrozenClock, loop: asyncio.AbstractEventLoop,
                 data_dir: Path) -> None:
        self.store = CachingStore(SqliteStore(path))
        loop.run_until_complete(self.store.open())
        self.keyless = Keyless(self.store, clock, Settings(public_url="http://testserver"), master)
        boot = loop.run_until_complete(bootstrap(self.keyless, data_dir))
        self.api = Api(InProcess(self.keyless, clock, json.loads(boot.owner_file.read_text()), loop))


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    loop = asyncio.new_event_loop()
    master = MasterKey(secrets.token_bytes(32))
    clock = FrozenClock(1_800_000_000.0)
    pair = (Replica(tmp_path / "shared.db", master, clock, loop, tmp_path / "a"),
            Replica(tmp_path / "shared.db", master, clock, loop, tmp_path / "b"))
    yield pair
    for replica in pair:
        replica.api.client.close()
        loop.run_until_complete(replica.store.close())
    loop.close()


def test_a_user_disabled_on_one_replica_is_refused_by_the_other(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    frank = _add_user(a.api, "frank@example.com")
    robot = a.api.create_sa("frank-robot")["email"]
    a.api.add_binding(f"/v1/projects/-/serviceAccounts/{robot}", TOKEN_CREATOR, "user:frank@example.com")
    token = _token(b.api, frank)
    mint = f"/v1/projects/-/serviceAccounts/{robot}:generateAccessToken"
    assert _works(b.api, token)  # b has now remembered this caller, on the API and on the credential verbs
    assert b.api.call("POST", mint, {"scope": [CLOUD]}, token=token).status_code == 200
    a.api.ok("POST", f"{USERS}/frank@example.com:disable", {})
    assert not _works(b.api, token)
    assert_google_error(b.api.call("POST", mint, {"scope": [CLOUD]}, token=token), 401, "UNAUTHENTICATED")
    assert_oauth_error(b.api.refresh_token_grant(frank), 400, "invalid_grant")
    a.api.ok("POST", f"{USERS}/frank@example.com:enable", {})
    assert _works(b.api, token)
    a.api.ok("DELETE", f"{USERS}/frank@example.com")
    assert not _works(b.api, token)


def test_a_refresh_token_revoked_on_one_replica_is_refused_by_the_other(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    grace = _add_user(a.api, "grace@example.com")
    token = _token(b.api, grace)
    assert _works(b.api, token)
    assert a.api.client.post("/revoke", data={"token": grace["refresh_token"]}).status_code == 200
    assert not _works(b.api, token)
    assert_oauth_error(b.api.refresh_token_grant(grace), 400, "invalid_grant")


def test_a_secret_reset_on_one_replica_is_enforced_by_the_other(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    heidi = _add_user(a.api, "heidi@example.com")
    token = _token(b.api, heidi)
    assert _works(b.api, token)
    new = a.api.ok("POST", f"{USERS}/heidi@example.com:resetSecret", {})["credentials"]
    assert not _works(b.api, token)
    assert_oauth_error(b.api.refresh_token_grant(heidi), 400, "invalid_grant")
    assert _works(b.api, _token(b.api, new))


# ---------------------------------------------------------------- the CLI


def _refresh_status(server: Server, credential_file: Path) -> int:
    info = json.loads(credential_file.read_text())
    r = requests.post(f"{server.url}/token", timeout=10, data={
        "grant_type": "refresh_token", "client_id": info["client_id"], "client_secret": info["client_secret"],
        "refresh_token": info["refresh_token"]})
    return r.status_code


def test_cli_disables_enables_resets_and_deletes_users(fresh_server: Server, tmp_path: Path) -> None:
    server = fresh_server
    server.owner("POST", USERS, {"email": "ivan@example.com"})
    server.cli("users", "disable", "ivan@example.com")
    assert server.owner("GET", f"{USERS}/ivan@example.com")["disabled"] is True
    server.cli("users", "enable", "ivan@example.com")
    assert server.owner("GET", f"{USERS}/ivan@example.com")["disabled"] is False

    output = tmp_path / "ivan.json"
    server.cli("users", "reset-secret", "ivan@example.com", "--output", str(output))
    assert output.stat().st_mode & 0o777 == 0o600
    assert server.user_token(output)
    printed = json.loads(server.cli("users", "reset-secret", "ivan@example.com").stdout)
    assert printed["type"] == "authorized_user" and printed["account"] == "ivan@example.com"
    assert _refresh_status(server, output) == 400  # the file written before the second reset is dead

    server.cli("users", "delete", "ivan@example.com")
    assert "ivan@example.com" not in server.cli("users", "list").stdout
    failed = server.cli("users", "disable", "ivan@example.com", check=False)
    assert failed.returncode == 1 and "ERROR: (keyless.users.disable)" in failed.stderr


def test_cli_resets_the_owner_and_rewrites_owner_json_only_when_told(fresh_server: Server) -> None:
    server = fresh_server
    before = server.owner_file.read_text()
    printed = json.loads(server.cli("users", "reset-secret", "owner@keyless.local").stdout)
    assert server.owner_file.read_text() == before  # not told where: owner.json is left alone (and now dead)
    assert _refresh_status(server, server.owner_file) == 400
    elsewhere = server.data_dir / "renewed.json"
    elsewhere.write_text(json.dumps(printed))
    server.cli("--credential-file", str(elsewhere), "users", "reset-secret", "owner@keyless.local",
               "--output", str(server.owner_file))
    assert server.owner_file.stat().st_mode & 0o777 == 0o600
    assert server.user_token(server.owner_file)
