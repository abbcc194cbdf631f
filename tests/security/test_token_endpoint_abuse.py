"""``/token`` (and its aliases) under abuse: rate limits, and audit entries that blame no one on a claim.

* With ``--rate-limit`` set, failed grants are limited per client address (the caller cannot vary it without
  cost, unlike the claims it posts), and granted ones per verified identity (the budget its API calls use).
  A limited request answers 429 in the OAuth error shape and is not audited, so a flood of garbage adds at
  most the budget's worth of entries.
* A failed grant's entry has no principal: the issuer an assertion claims is recorded as ``claimedIssuer``
  in the request, not as who called.

The limited server is a second keyless on the same store (the first one, unlimited, sets up the state).
Rates of one per 100 seconds make "the budget is spent" hold for the length of a test without a clock.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from keyless.http.app import build_app
from keyless.service.app import Keyless
from keyless.service.limits import Limits
from keyless.storage.base import AuditQuery
from tests.http.helpers import Api, NoServerErrors, assert_oauth_error
from tests.security.test_forgery import JWT_BEARER, World, _world, jwt, stranger_key

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN_PATHS = ("/token", "/oauth2/v4/token", "/o/oauth2/token")
SLOW = 0.01  # one request per 100 seconds


@pytest.fixture
def world(tmp_path: Any) -> Iterator[World]:
    with _world(tmp_path) as w:
        yield w


def limited_keyless(world: World, rate: float = SLOW) -> Keyless:
    kl = world.api.inproc.keyless
    return Keyless(kl.store, kl.core.clock, kl.settings, kl.core.master, Limits(rate_limit=rate))


def client(kl: Keyless, address: str) -> TestClient:
    return NoServerErrors(build_app(kl), base_url="http://testserver", raise_server_exceptions=False,
                          client=(address, 40000))


def garbage(world: World) -> dict[str, str]:
    """An assertion that claims the victim but is signed by a stranger."""
    return {"grant_type": JWT_BEARER, "assertion": jwt(stranger_key(), world.claims(), kid=world.victim.key_id)}


def good(world: World) -> dict[str, str]:
    return {"grant_type": JWT_BEARER, "assertion": world.assertion()}


def token_entries(world: World) -> list[Any]:
    api: Api = world.api
    return list(api.inproc.run(api.inproc.keyless.store.query_audit(AuditQuery(method="oauth2.Token",
                                                                                limit=10_000))))


def assert_rate_limited(response: Any) -> None:
    body = assert_oauth_error(response, 429, "rate_limit_exceeded")
    assert "access_token" not in body


def test_failed_grants_are_limited_per_client_address(world: World) -> None:
    kl = limited_keyless(world)
    attacker, neighbour = client(kl, "10.0.0.1"), client(kl, "10.0.0.2")
    assert_oauth_error(attacker.post("/token", data=garbage(world)), 400, "invalid_grant")
    for path in TOKEN_PATHS:
        assert_rate_limited(attacker.post(path, data=garbage(world)))
        # A request from the spent address is refused before it is read, good or bad.
        assert_rate_limited(attacker.post(path, data=good(world)))
        assert_rate_limited(attacker.post(path, content=b"\xff not a form"))
    # Another address has a budget of its own.
    assert_oauth_error(neighbour.post("/token", data=garbage(world)), 400, "invalid_grant")


def test_limited_requests_are_not_audited(world: World) -> None:
    kl = limited_keyless(world)
    attacker = client(kl, "10.0.0.1")
    before = len(token_entries(world))
    codes = [attacker.post("/token", data=garbage(world)).status_code for _ in range(200)]
    assert codes[0] == 400 and set(codes[1:]) == {429}, codes
    assert len(token_entries(world)) == before + 1


def test_granted_tokens_are_limited_per_verified_identity(world: World) -> None:
    kl = limited_keyless(world)
    first, second = client(kl, "10.0.0.3"), client(kl, "10.0.0.4")
    ok = first.post("/token", data=good(world))
    assert ok.status_code == 200, ok.text
    # The same identity from elsewhere: its budget is spent; the address's failed-grant budget is not.
    assert_rate_limited(second.post("/token", data=good(world)))
    assert_oauth_error(second.post("/token", data=garbage(world)), 400, "invalid_grant")
    # A user's refresh-token grants too.
    owner = world.api.inproc.owner
    refresh = {"grant_type": "refresh_token", "client_id": owner["client_id"],
               "client_secret": owner["client_secret"], "refresh_token": owner["refresh_token"]}
    assert client(kl, "10.0.0.5").post("/token", data=refresh).status_code == 200
    assert_rate_limited(client(kl, "10.0.0.6").post("/token", data=refresh))


def test_without_a_rate_limit_nothing_is_limited(world: World) -> None:
    kl = limited_keyless(world, rate=0.0)
    attacker = client(kl, "10.0.0.1")
    for _ in range(5):
        assert_oauth_error(attacker.post("/token", data=garbage(world)), 400, "invalid_grant")
        assert attacker.post("/token", data=good(world)).status_code == 200


def test_a_failed_grant_blames_no_one(world: World) -> None:
    api = world.api
    before = len(token_entries(world))
    assert_oauth_error(api.client.post("/token", data=garbage(world)), 400, "invalid_grant")
    failed = token_entries(world)[before:]
    assert len(failed) == 1 and failed[0].denied
    assert failed[0].principal == "", failed[0]
    assert failed[0].body["request"]["claimedIssuer"] == world.victim.email
    # Read back through the API: the Cloud Audit Logs entry names no principal either.
    rendered = api.ok("GET", "/v1/auditLog", params={"pageSize": 1000})["entries"]
    mine = [e for e in rendered if e["insertId"] == failed[0].insert_id]
    assert mine[0]["protoPayload"]["authenticationInfo"]["principalEmail"] == ""
    # A refresh token with the wrong client secret: the user is not the principal either.
    owner = api.inproc.owner
    r = api.client.post("/token", data={"grant_type": "refresh_token", "client_id": owner["client_id"],
                                        "client_secret": "wrong", "refresh_token": owner["refresh_token"]})
    assert_oauth_error(r, 401, "invalid_client")
    assert token_entries(world)[-1].principal == ""


def test_a_granted_token_names_the_verified_identity(world: World) -> None:
    before = len(token_entries(world))
    r = world.api.client.post("/token", data=good(world))
    assert r.status_code == 200, r.text
    entry = token_entries(world)[before]
    assert entry.principal == world.victim.email and not entry.denied
