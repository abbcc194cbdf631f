"""Unmodified google-auth against a real keyless server: key files, impersonation, delegation chains,
Node-style JWT-bearer assertions, authorized_user files from ``keyless users add``, and ``projects/-`` addressing.

Every flow goes over HTTP to a ``keyless serve`` subprocess; the only redirection is what google-auth itself
offers (a key file's ``token_uri``, ``iam_endpoint_override``, ``with_token_uri``).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from pathlib import Path

import jwt
import pytest
import requests
from google.auth import exceptions, impersonated_credentials
from google.auth.transport.requests import Request
from google.oauth2 import credentials as user_credentials

from tests.conftest import CLOUD, Server
from tests.e2e.support import (
    TOKEN_CREATOR,
    google_error,
    iamcredentials,
    mint,
    probe,
    sa_credentials,
    sa_token,
)

GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"
IMPLICIT_DELEGATION = "iam.serviceAccounts.implicitDelegation"


def _impersonate(server: Server, source: object, target: str, delegates: list[str] | None = None,
                 lifetime: int = 600) -> impersonated_credentials.Credentials:
    return impersonated_credentials.Credentials(
        source_credentials=source, target_principal=target, target_scopes=[CLOUD], delegates=delegates,
        lifetime=lifetime,
        iam_endpoint_override=f"{server.url}/v1/projects/-/serviceAccounts/{target}:generateAccessToken")


def _tokeninfo_email(server: Server, token: str) -> str:
    r = requests.get(f"{server.url}/tokeninfo", params={"access_token": token}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["email"])


def _resource(email: str) -> str:
    return f"projects/-/serviceAccounts/{email}"


# ---------------------------------------------------------------- 1. key file -> access token


def test_key_file_token_uri_points_at_server_and_refresh_yields_a_working_bearer(server: Server,
                                                                                 tmp_path: Path) -> None:
    caller, target = server.create_sa(), server.create_sa()
    key_path = server.key_file(caller, tmp_path / "caller.json")
    info = json.loads(key_path.read_text())
    assert info["type"] == "service_account"
    assert info["client_email"] == caller
    assert info["token_uri"] == f"{server.url}/token"

    creds = sa_credentials(key_path)
    assert not creds.valid
    creds.refresh(Request())
    assert creds.valid and creds.token
    assert creds.expiry is not None
    remaining = (creds.expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None)).total_seconds()
    assert 3000 < remaining <= 3600
    assert _tokeninfo_email(server, creds.token) == caller

    # The token authenticates API calls as the caller: what it may do follows the target's policy.
    headers: dict[str, str] = {}
    creds.apply(headers)
    assert headers["authorization"] == f"Bearer {creds.token}"
    before = probe(server, creds.token, target)
    assert before.status_code == 200, before.text
    assert before.json().get("permissions", []) == []
    google_error(mint(server, creds.token, target), 403, "PERMISSION_DENIED")

    server.grant(target, f"serviceAccount:{caller}")
    assert probe(server, creds.token, target).json() == {"permissions": [GET_ACCESS_TOKEN]}
    minted = mint(server, creds.token, target)
    assert minted.status_code == 200, minted.text
    assert _tokeninfo_email(server, minted.json()["accessToken"]) == target

    # A token that is not one the server minted is refused.
    google_error(probe(server, creds.token[:-2] + "xx", target), 401, "UNAUTHENTICATED")


# ---------------------------------------------------------------- 2. impersonated credentials


def test_impersonated_credentials_get_a_token_for_a_target_the_source_may_impersonate(server: Server,
                                                                                      tmp_path: Path) -> None:
    source, target = server.create_sa(), server.create_sa()
    server.grant(target, f"serviceAccount:{source}")
    source_creds = sa_credentials(server.key_file(source, tmp_path / "source.json"))

    imp = _impersonate(server, source_creds, target, lifetime=900)
    imp.refresh(Request())
    assert imp.valid and imp.token
    assert _tokeninfo_email(server, imp.token) == target
    assert imp.expiry is not None
    remaining = (imp.expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None)).total_seconds()
    assert 800 < remaining <= 900
    # The impersonated token is itself a working bearer.
    assert probe(server, imp.token, target).status_code == 200


def test_impersonated_credentials_are_refused_without_token_creator(server: Server, tmp_path: Path) -> None:
    source, allowed, other = server.create_sa(), server.create_sa(), server.create_sa()
    server.grant(allowed, f"serviceAccount:{source}")  # a grant elsewhere does not leak onto `other`
    source_creds = sa_credentials(server.key_file(source, tmp_path / "source.json"))

    with pytest.raises(exceptions.RefreshError) as caught:
        _impersonate(server, source_creds, other).refresh(Request())
    text = str(caught.value)
    assert "PERMISSION_DENIED" in text
    assert GET_ACCESS_TOKEN in text


def test_service_account_user_role_does_not_allow_impersonation(server: Server, tmp_path: Path) -> None:
    source, target = server.create_sa(), server.create_sa()
    server.grant(target, f"serviceAccount:{source}", role="roles/iam.serviceAccountUser")
    source_creds = sa_credentials(server.key_file(source, tmp_path / "source.json"))
    with pytest.raises(exceptions.RefreshError, match="PERMISSION_DENIED"):
        _impersonate(server, source_creds, target).refresh(Request())


# ---------------------------------------------------------------- 3. delegation chains


@pytest.fixture
def chain(server: Server, tmp_path: Path) -> tuple[str, str, str, object]:
    """source -> delegate -> target, each holding Token Creator on the next; and the source's credentials."""
    source, delegate, target = server.create_sa(), server.create_sa(), server.create_sa()
    server.grant(delegate, f"serviceAccount:{source}")
    server.grant(target, f"serviceAccount:{delegate}")
    return source, delegate, target, sa_credentials(server.key_file(source, tmp_path / "source.json"))


def test_two_hop_delegation_chain_yields_a_token_for_the_target(server: Server, chain: tuple) -> None:
    _, delegate, target, creds = chain
    imp = _impersonate(server, creds, target, delegates=[_resource(delegate)])
    imp.refresh(Request())
    assert _tokeninfo_email(server, imp.token) == target
    # The chain is what grants it: the source alone may not impersonate the target.
    with pytest.raises(exceptions.RefreshError, match="PERMISSION_DENIED"):
        _impersonate(server, creds, target).refresh(Request())


def test_delegation_chain_accepts_bare_delegate_emails(server: Server, chain: tuple) -> None:
    """``delegates=[delegate_email]``: google-auth sends the list unchanged, and its docstring shows bare
    accounts ([serviceAccountB, serviceAccountC]); Google's reference documents the
    ``projects/-/serviceAccounts/{EMAIL}`` form, which the test above uses."""
    _, delegate, target, creds = chain
    imp = _impersonate(server, creds, target, delegates=[delegate])
    imp.refresh(Request())
    assert _tokeninfo_email(server, imp.token) == target


@pytest.mark.parametrize("broken", ["delegate_on_target", "source_on_delegate"])
def test_delegation_chain_breaks_when_a_link_is_removed(server: Server, chain: tuple, broken: str) -> None:
    source, delegate, target, creds = chain
    _impersonate(server, creds, target, delegates=[_resource(delegate)]).refresh(Request())

    if broken == "delegate_on_target":
        server.revoke_all(target, f"serviceAccount:{delegate}")
        permission = GET_ACCESS_TOKEN
    else:
        server.revoke_all(delegate, f"serviceAccount:{source}")
        permission = IMPLICIT_DELEGATION
    with pytest.raises(exceptions.RefreshError) as caught:
        _impersonate(server, creds, target, delegates=[_resource(delegate)]).refresh(Request())
    assert "PERMISSION_DENIED" in str(caught.value)
    assert permission in str(caught.value)


# ---------------------------------------------------------------- 10. projects/- and missing accounts


def test_missing_target_through_wildcard_is_403_not_404(server: Server, tmp_path: Path) -> None:
    # A caller holding Token Creator on a whole project may use any account in it, so a 403 for a missing one
    # there cannot be an ordinary denial.
    project = f"proj-{secrets.token_hex(4)}"
    server.owner("POST", "/keyless/v1/projects", {"projectId": project})
    caller = server.create_sa()
    policy = server.owner("POST", f"/v1/projects/{project}:getIamPolicy", {})
    policy.setdefault("bindings", []).append({"role": TOKEN_CREATOR, "members": [f"serviceAccount:{caller}"]})
    server.owner("POST", f"/v1/projects/{project}:setIamPolicy", {"policy": policy})
    token = sa_token(server, caller, tmp_path)
    existing = server.create_sa(project=project)
    missing = f"gone-{secrets.token_hex(4)}@{project}.iam.gserviceaccount.com"

    calls = [("generateAccessToken", {"scope": [CLOUD]}, "getAccessToken"),
             ("generateIdToken", {"audience": "https://aud.example"}, "getOpenIdToken"),
             ("signBlob", {"payload": "aGVsbG8="}, "signBlob"),
             ("signJwt", {"payload": json.dumps({"sub": "x"})}, "signJwt")]
    for verb, body, permission in calls:
        ok = iamcredentials(server, token, existing, verb, body)
        assert ok.status_code == 200, (verb, ok.text)
        err = google_error(iamcredentials(server, token, missing, verb, body), 403, "PERMISSION_DENIED")
        assert f"iam.serviceAccounts.{permission}" in err["message"], err

    owner = {"Authorization": f"Bearer {server.owner_token}"}
    google_error(requests.get(f"{server.url}/v1/projects/-/serviceAccounts/{missing}", timeout=10,
                              headers=owner), 403, "PERMISSION_DENIED")
    # Named with its project, the same lookup is an honest 404.
    google_error(requests.get(f"{server.url}/v1/projects/{project}/serviceAccounts/{missing}", timeout=10,
                              headers=owner), 404, "NOT_FOUND")


def test_missing_delegate_through_wildcard_is_403(server: Server, tmp_path: Path) -> None:
    source, target = server.create_sa(), server.create_sa()
    server.grant(target, f"serviceAccount:{source}")
    token = sa_token(server, source, tmp_path)
    missing = f"gone-{secrets.token_hex(4)}@{server.project}.iam.gserviceaccount.com"
    google_error(mint(server, token, target, delegates=[_resource(missing)]), 403, "PERMISSION_DENIED")


# ---------------------------------------------------------------- 11. Node-style JWT-bearer assertion


def _node_assertion(key_info: dict[str, str], now: int, **extra: object) -> str:
    claims = {"iss": key_info["client_email"], "scope": CLOUD, "aud": "https://oauth2.googleapis.com/token",
              "iat": now, "exp": now + 3600, **extra}
    # gtoken's header is {"alg":"RS256"} only: no kid, no typ.
    return jwt.encode(claims, key_info["private_key"], algorithm="RS256", headers={"typ": None})


def _jwt_bearer(server: Server, assertion: str) -> requests.Response:
    return requests.post(f"{server.url}/token", timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})


def test_node_style_assertion_without_kid_is_accepted(server: Server, tmp_path: Path) -> None:
    sa = server.create_sa()
    first = json.loads(server.key_file(sa, tmp_path / "first.json").read_text())
    second = json.loads(server.key_file(sa, tmp_path / "second.json").read_text())
    now = int(time.time())
    for info in (first, second):  # with no kid, the server must try every active key of the account
        assertion = _node_assertion(info, now)
        assert jwt.get_unverified_header(assertion) == {"alg": "RS256"}
        r = _jwt_bearer(server, assertion)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "Bearer"
        assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 3600
        assert _tokeninfo_email(server, body["access_token"]) == sa
        assert probe(server, body["access_token"], sa).status_code == 200


def test_node_style_assertion_signed_by_another_accounts_key_is_refused(server: Server, tmp_path: Path) -> None:
    victim, attacker = server.create_sa(), server.create_sa()
    server.key_file(victim, tmp_path / "victim.json")
    attacker_info = json.loads(server.key_file(attacker, tmp_path / "attacker.json").read_text())
    forged = _node_assertion({**attacker_info, "client_email": victim}, int(time.time()))
    r = _jwt_bearer(server, forged)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_grant"


# ---------------------------------------------------------------- 12. keyless users add


def test_users_add_writes_an_authorized_user_file_that_works_with_google_auth(server: Server,
                                                                             tmp_path: Path) -> None:
    email = f"dev-{secrets.token_hex(4)}@example.com"
    out = tmp_path / "dev.json"
    server.cli("users", "add", email, "--output", str(out))
    info = json.loads(out.read_text())
    assert info["type"] == "authorized_user"
    assert {"client_id", "client_secret", "refresh_token"} <= set(info)
    assert info["token_uri"] == f"{server.url}/token"
    assert out.stat().st_mode & 0o077 == 0

    # google-auth always resets token_uri to Google's when loading the file; with_token_uri points it back.
    user = user_credentials.Credentials.from_authorized_user_file(str(out)).with_token_uri(info["token_uri"])
    user.refresh(Request())
    assert user.valid and user.token
    assert _tokeninfo_email(server, user.token) == email

    target = server.create_sa()
    with pytest.raises(exceptions.RefreshError) as caught:
        _impersonate(server, user, target).refresh(Request())
    assert "PERMISSION_DENIED" in str(caught.value) and GET_ACCESS_TOKEN in str(caught.value)
    google_error(mint(server, user.token, target), 403, "PERMISSION_DENIED")

    server.grant(target, f"user:{email}")
    imp = _impersonate(server, user, target)
    imp.refresh(Request())
    assert _tokeninfo_email(server, imp.token) == target
