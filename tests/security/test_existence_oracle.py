"""A caller without permission cannot tell an account that exists from one that does not, nor learn anything
about it (its email, its project): every verb on ``projects/{-|p}/serviceAccounts/{email|uniqueId}`` answers
such a caller the same status, message and details for both, naming only what the caller sent.

A caller who may learn which accounts the named project holds (it holds the permission asked for, or
``iam.serviceAccounts.get``/``.list``, on the project) may be told that an account is missing (404), as on
Google, and so may anyone naming a project that does not exist; through the ``-`` wildcard a missing account is
403 for everyone, as Google documents.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.http.helpers import CLOUD, PROJECT, Api, assert_google_error
from tests.security.test_forgery import Account, World, _world, jwt, new_account

TOKEN_AUD = "http://testserver/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CERT = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n").decode()


def access_token(api: Api, account: Account) -> str:
    now = int(api.clock.now())
    claims = {"iss": account.email, "sub": account.email, "aud": TOKEN_AUD, "iat": now, "exp": now + 3000,
              "scope": CLOUD}
    r = api.client.post("/token", data={"grant_type": JWT_BEARER,
                                        "assertion": jwt(account.key, claims, kid=account.key_id)})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """``victim`` exists and has a key; ``other`` (the caller) holds no permission on anything."""
    with _world(tmp_path_factory.mktemp("oracle")) as w:
        yield w


def _requests(key_id: str) -> list[tuple[str, str, Any]]:
    """(method, path after the account's name, body) of every verb that names an account."""
    return [
        ("GET", "", None),
        ("PATCH", "", {"serviceAccount": {"displayName": "x"}, "updateMask": "displayName"}),
        ("PUT", "", {"displayName": "x"}),
        ("DELETE", "", None),
        ("POST", ":disable", {}),
        ("POST", ":enable", {}),
        ("POST", ":getIamPolicy", {}),
        ("POST", ":setIamPolicy", {"policy": {"bindings": []}}),
        ("GET", "/keys", None),
        ("POST", "/keys", {}),
        ("POST", "/keys:upload", {"publicKeyData": CERT}),
        ("GET", f"/keys/{key_id}", None),
        ("DELETE", f"/keys/{key_id}", None),
        ("POST", f"/keys/{key_id}:disable", {}),
        ("POST", f"/keys/{key_id}:enable", {}),
        ("POST", ":generateAccessToken", {"scope": [CLOUD]}),
        ("POST", ":generateIdToken", {"audience": "https://aud.example"}),
        ("POST", ":signBlob", {"payload": "aGk="}),
        ("POST", ":signBlob", {"bytesToSign": "aGk="}),  # IAM v1's, which also takes a real project
        ("POST", ":signJwt", {"payload": json.dumps({"sub": "x"})}),
        ("POST", ":testIamPermissions", {"permissions": ["iam.serviceAccounts.get"]}),
        ("GET", "/allowedLocations", None),
    ]


def _answer(api: Api, token: str, method: str, name: str, suffix: str, body: Any, ident: str) -> tuple[int, str]:
    r = api.call(method, f"/v1/{name}{suffix}", body, token=token)
    assert r.status_code < 500, r.text
    return r.status_code, r.text.replace(ident, "{ACCOUNT}")


def _pairs(world: World) -> list[tuple[str, str, str, str]]:
    """(name of the existing account, its identifier, name of a missing one, its identifier) in every form."""
    victim = world.victim
    ghost_id = "1" + "".join(secrets.choice("0123456789") for _ in range(20))
    ghost_email = f"ghost-{secrets.token_hex(3)}@{PROJECT}.iam.gserviceaccount.com"
    out = []
    for project in ("-", PROJECT):
        out.append((f"projects/{project}/serviceAccounts/{victim.unique_id}", victim.unique_id,
                    f"projects/{project}/serviceAccounts/{ghost_id}", ghost_id))
        out.append((f"projects/{project}/serviceAccounts/{victim.email}", victim.email,
                    f"projects/{project}/serviceAccounts/{ghost_email}", ghost_email))
    return out


def test_an_unprivileged_caller_gets_the_same_answer_for_existing_and_missing_accounts(world: World) -> None:
    api, victim = world.api, world.victim
    token = access_token(api, world.other)
    for name, ident, ghost_name, ghost_ident in _pairs(world):
        for method, suffix, body in _requests(victim.key_id):
            existing = _answer(api, token, method, name, suffix, body, ident)
            missing = _answer(api, token, method, ghost_name, suffix, body, ghost_ident)
            assert existing == missing, (method, name + suffix, existing, missing)
            if ident == victim.unique_id:
                assert victim.email not in existing[1], (method, name + suffix, existing)
    # Still there, unchanged: every answer was a refusal (or a read that needs no permission).
    assert api.ok("GET", f"/v1/projects/-/serviceAccounts/{victim.email}").get("displayName") != "x"
    keys = api.ok("GET", f"/v1/projects/-/serviceAccounts/{victim.email}/keys")["keys"]
    assert [(k["name"].rsplit("/", 1)[1], k.get("disabled", False)) for k in keys] == [(victim.key_id, False)]


def test_a_denial_names_the_permission_and_the_resource_as_written(world: World) -> None:
    api, victim = world.api, world.victim
    token = access_token(api, world.other)
    name = f"projects/-/serviceAccounts/{victim.unique_id}"
    err = assert_google_error(api.call("POST", f"/v1/{name}:getIamPolicy", {}, token=token), 403,
                              "PERMISSION_DENIED")
    assert err["message"] == ("Permission 'iam.serviceAccounts.getIamPolicy' denied on resource "
                              "(or it may not exist).")
    assert err["details"][0]["metadata"] == {"permission": "iam.serviceAccounts.getIamPolicy", "resource": name}
    for verb, body, permission in [(":generateAccessToken", {"scope": [CLOUD]}, "getAccessToken"),
                                   (":undelete", {}, "undelete")]:
        err = assert_google_error(api.call("POST", f"/v1/{name}{verb}", body, token=token), 403,
                                  "PERMISSION_DENIED")
        assert err["details"][0]["metadata"] == {"permission": f"iam.serviceAccounts.{permission}",
                                                 "resource": name}


def test_undelete_answers_an_unprivileged_caller_the_same(world: World) -> None:
    api, victim = world.api, world.victim
    token = access_token(api, world.other)
    ghost = "1" + "".join(secrets.choice("0123456789") for _ in range(20))
    for project in ("-", PROJECT):
        existing = _answer(api, token, "POST", f"projects/{project}/serviceAccounts/{victim.unique_id}",
                           ":undelete", {}, victim.unique_id)
        missing = _answer(api, token, "POST", f"projects/{project}/serviceAccounts/{ghost}", ":undelete", {},
                          ghost)
        assert existing == missing and existing[0] == 403, (existing, missing)
        assert PROJECT not in existing[1].replace(f"projects/{PROJECT}/", "")


def test_a_caller_with_the_permission_on_the_project_is_told_what_is_missing(world: World) -> None:
    api = world.api
    ghost = f"ghost-{secrets.token_hex(3)}@{PROJECT}.iam.gserviceaccount.com"
    for verb, method, body in [("", "GET", None), (":getIamPolicy", "POST", {}), ("/keys", "GET", None)]:
        # Named in its project: an honest 404 for the owner, who holds the permission on the project.
        assert_google_error(api.call(method, f"/v1/projects/{PROJECT}/serviceAccounts/{ghost}{verb}", body), 404,
                            "NOT_FOUND")
        # Through the wildcard the project is unknown: 403, as Google documents.
        assert_google_error(api.call(method, f"/v1/projects/-/serviceAccounts/{ghost}{verb}", body), 403,
                            "PERMISSION_DENIED")
    # A caller who may list the project's accounts may be told one is missing, whatever it asked for (here
    # roles/viewer: get and list, not setIamPolicy); a caller holding only an unrelated role may not.
    viewer = new_account(api, f"viewer-{secrets.token_hex(3)}")
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/viewer", f"serviceAccount:{viewer.email}")
    opener = new_account(api, f"opener-{secrets.token_hex(3)}")
    api.add_binding(f"/v1/projects/{PROJECT}", "roles/iam.serviceAccountOpenIdTokenCreator",
                    f"serviceAccount:{opener.email}")
    for account, status in [(viewer, (404, "NOT_FOUND")), (opener, (403, "PERMISSION_DENIED"))]:
        token = access_token(api, account)
        for method, verb, body in [("GET", "", None), ("POST", ":setIamPolicy", {"policy": {"bindings": []}})]:
            assert_google_error(api.call(method, f"/v1/projects/{PROJECT}/serviceAccounts/{ghost}{verb}", body,
                                         token=token), *status)
    # A project that does not exist holds no account, whoever asks.
    token = access_token(api, world.other)
    assert_google_error(api.call("GET", f"/v1/projects/no-such-project/serviceAccounts/{ghost}", token=token),
                        404, "NOT_FOUND")
