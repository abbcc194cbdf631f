"""Token lifetimes and the org constraint that extends them; what disabling or deleting accounts and keys does
to minting and to tokens already issued.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
import requests
from google.auth import exceptions
from google.auth.transport.requests import Request

from tests.conftest import CLOUD, Server
from tests.e2e.support import (
    EXPIRE_TIME_RE,
    google_error,
    iamcredentials,
    mint,
    parse_expire_time,
    probe,
    sa_credentials,
    sa_token,
    server_now,
)

LIFETIME_POLICY = "/v2/projects/keyless-dev/policies/iam.allowServiceAccountCredentialLifetimeExtension"


@pytest.fixture
def pair(server: Server, tmp_path: Path) -> tuple[str, str, str]:
    """(caller token, caller email, target email) with the caller holding Token Creator on the target."""
    caller, target = server.create_sa(), server.create_sa()
    server.grant(target, f"serviceAccount:{caller}")
    return sa_token(server, caller, tmp_path), caller, target


def _allow_extension(server: Server, email: str) -> None:
    """Add ``email`` to the project's lifetime-extension constraint, keeping whatever it already lists."""
    current = server.owner("GET", LIFETIME_POLICY, expect=None)
    allowed: list[str] = []
    for rule in current.get("spec", {}).get("rules", []):
        allowed += rule.get("values", {}).get("allowedValues", [])
    server.owner("PATCH", LIFETIME_POLICY, {"spec": {"rules": [{"values": {"allowedValues": [*allowed, email]}}]}})


# ---------------------------------------------------------------- 6. lifetimes


def test_default_and_explicit_lifetimes_and_expire_time_format(server: Server, pair: tuple) -> None:
    token, _, target = pair
    now = server_now(server, token, target)
    for body, expected in [({}, 3600), ({"lifetime": "3600s"}, 3600), ({"lifetime": "120s"}, 120),
                           ({"lifetime": "300.5s"}, 300)]:
        r = mint(server, token, target, **body)
        assert r.status_code == 200, r.text
        expire = r.json()["expireTime"]
        assert EXPIRE_TIME_RE.match(expire), expire
        assert abs(parse_expire_time(expire) - (now + expected)) <= 5, (body, expire)


def test_lifetime_over_an_hour_needs_the_org_constraint(server: Server, pair: tuple) -> None:
    token, caller, target = pair
    for lifetime in ("43200s", "3601s"):
        err = google_error(mint(server, token, target, lifetime=lifetime), 400, "INVALID_ARGUMENT")
        assert "lifetime" in err["message"].lower(), err

    _allow_extension(server, target)

    r = mint(server, token, target, lifetime="43200s")
    assert r.status_code == 200, r.text
    expire = r.json()["expireTime"]
    assert EXPIRE_TIME_RE.match(expire), expire
    assert abs(parse_expire_time(expire) - (server_now(server, token, target) + 43200)) <= 5
    # Twelve hours is still the ceiling.
    google_error(mint(server, token, target, lifetime="43201s"), 400, "INVALID_ARGUMENT")

    # The constraint lists accounts, not callers: another target is still limited to an hour.
    other = server.create_sa()
    server.grant(other, f"serviceAccount:{caller}")
    google_error(mint(server, token, other, lifetime="43200s"), 400, "INVALID_ARGUMENT")


# ---------------------------------------------------------------- 9. disabled and deleted accounts and keys


def test_disabled_target_mints_nothing_and_its_tokens_stop_working(server: Server, pair: tuple,
                                                                   tmp_path: Path) -> None:
    token, _, target = pair
    witness = server.create_sa()  # any resource will do for an authenticated call
    minted = mint(server, token, target)
    assert minted.status_code == 200, minted.text
    target_token = minted.json()["accessToken"]
    key_path = server.key_file(target, tmp_path / "target.json")
    own_token = sa_token(server, target, tmp_path)
    for t in (target_token, own_token):
        assert probe(server, t, witness).status_code == 200

    server.owner("POST", f"/v1/projects/-/serviceAccounts/{target}:disable", {})

    google_error(mint(server, token, target), 400, "FAILED_PRECONDITION")
    google_error(iamcredentials(server, token, target, "generateIdToken", {"audience": "https://a.example"}),
                 400, "FAILED_PRECONDITION")
    google_error(iamcredentials(server, token, target, "signBlob", {"payload": "aGk="}), 400, "FAILED_PRECONDITION")
    for t in (target_token, own_token):
        google_error(probe(server, t, witness), 401, "UNAUTHENTICATED")
    with pytest.raises(exceptions.RefreshError, match="invalid_grant"):
        sa_credentials(key_path).refresh(Request())

    server.owner("POST", f"/v1/projects/-/serviceAccounts/{target}:enable", {})
    again = mint(server, token, target)
    assert again.status_code == 200, again.text
    assert probe(server, again.json()["accessToken"], witness).status_code == 200


def test_disabled_delegate_breaks_the_chain(server: Server, tmp_path: Path) -> None:
    source, delegate, target = server.create_sa(), server.create_sa(), server.create_sa()
    server.grant(delegate, f"serviceAccount:{source}")
    server.grant(target, f"serviceAccount:{delegate}")
    token = sa_token(server, source, tmp_path)
    chain = [f"projects/-/serviceAccounts/{delegate}"]
    assert mint(server, token, target, delegates=chain).status_code == 200
    server.owner("POST", f"/v1/projects/-/serviceAccounts/{delegate}:disable", {})
    google_error(mint(server, token, target, delegates=chain), 400, "FAILED_PRECONDITION")


def test_tokens_of_a_deleted_account_stop_working(server: Server, pair: tuple, tmp_path: Path) -> None:
    token, _, target = pair
    witness = server.create_sa()
    minted = mint(server, token, target)
    assert minted.status_code == 200, minted.text
    target_token = minted.json()["accessToken"]
    key_token = sa_token(server, target, tmp_path)  # the account's own key-file token
    for t in (target_token, key_token):
        assert probe(server, t, witness).status_code == 200

    server.owner("DELETE", f"/v1/projects/-/serviceAccounts/{target}")

    for t in (target_token, key_token):
        google_error(probe(server, t, witness), 401, "UNAUTHENTICATED")
    google_error(mint(server, token, target), 403, "PERMISSION_DENIED")


def test_disabling_a_key_revokes_its_tokens_and_grants(server: Server, tmp_path: Path) -> None:
    sa, witness = server.create_sa(), server.create_sa()
    disabled_path = server.key_file(sa, tmp_path / "disabled.json")
    kept_path = server.key_file(sa, tmp_path / "kept.json")
    creds = sa_credentials(disabled_path)
    creds.refresh(Request())
    kept = sa_credentials(kept_path)
    kept.refresh(Request())
    assert probe(server, creds.token, witness).status_code == 200

    key_id = json.loads(disabled_path.read_text())["private_key_id"]
    server.owner("POST", f"/v1/projects/-/serviceAccounts/{sa}/keys/{key_id}:disable", {})

    google_error(probe(server, creds.token, witness), 401, "UNAUTHENTICATED")
    with pytest.raises(exceptions.RefreshError, match="invalid_grant"):
        sa_credentials(disabled_path).refresh(Request())
    # Nor does a kid-less (Node-style) assertion signed with the disabled key get through.
    info = json.loads(disabled_path.read_text())
    now = int(time.time())
    assertion = jwt.encode({"iss": sa, "scope": CLOUD, "aud": "https://oauth2.googleapis.com/token", "iat": now,
                            "exp": now + 3600}, info["private_key"], algorithm="RS256", headers={"typ": None})
    r = requests.post(f"{server.url}/token", timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

    # Only that key is affected.
    assert probe(server, kept.token, witness).status_code == 200
    fresh = sa_credentials(kept_path)
    fresh.refresh(Request())
    assert probe(server, fresh.token, witness).status_code == 200

    server.owner("POST", f"/v1/projects/-/serviceAccounts/{sa}/keys/{key_id}:enable", {})
    again = sa_credentials(disabled_path)
    again.refresh(Request())
    assert probe(server, again.token, witness).status_code == 200


def test_disabled_account_cannot_use_its_key_file(server: Server, tmp_path: Path) -> None:
    sa = server.create_sa()
    key_path = server.key_file(sa, tmp_path / "key.json")
    server.owner("POST", f"/v1/projects/-/serviceAccounts/{sa}:disable", {})
    with pytest.raises(exceptions.RefreshError, match="invalid_grant"):
        sa_credentials(key_path).refresh(Request())
