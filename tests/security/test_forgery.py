"""Forged, altered, stale and misdirected credentials are refused everywhere they can be presented:
as JWT-bearer assertions on ``/token``, as self-signed JWTs (``Authorization: Bearer``) on the API, and as
access tokens on the API and tokeninfo. In process, on a frozen clock, so expiry is exact.

Each case is checked against a control: the same construction with nothing wrong is accepted, so a refusal
is for the flaw the case introduces, not for something incidental.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyless.clock import FrozenClock
from keyless.crypto.keys import MasterKey
from keyless.service.app import Keyless
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
from keyless.storage.sqlite import SqliteStore
from tests.conftest import InProcess
from tests.http.helpers import Api, assert_google_error
from tests.security.support import is_oauth_error

TOKEN_AUD = "http://testserver/token"
API_AUD = "https://iamcredentials.googleapis.com/"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SKEW = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


def rs256(key: rsa.RSAPrivateKey, signing_input: str, digest: hashes.HashAlgorithm | None = None) -> str:
    return b64url(key.sign(signing_input.encode(), padding.PKCS1v15(), digest or hashes.SHA256()))


def jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any], *, kid: Any = None, header: dict[str, Any] | None = None
        ) -> str:
    hdr: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        hdr["kid"] = kid
    hdr.update(header or {})
    signing_input = encode(hdr, claims)
    return f"{signing_input}.{rs256(key, signing_input)}"


@dataclass
class Account:
    email: str
    unique_id: str
    key_id: str
    key: rsa.RSAPrivateKey


@dataclass
class World:
    api: Api
    victim: Account
    other: Account

    @property
    def now(self) -> int:
        return int(self.api.clock.now())

    def claims(self, account: Account | None = None, *, aud: str = TOKEN_AUD, lifetime: int = 600,
               **extra: Any) -> dict[str, Any]:
        email = (account or self.victim).email
        out: dict[str, Any] = {"iss": email, "sub": email, "aud": aud, "iat": self.now, "exp": self.now + lifetime}
        if aud == TOKEN_AUD:
            out["scope"] = CLOUD
        out.update(extra)
        return out

    def assertion(self, **extra: Any) -> str:
        return jwt(self.victim.key, self.claims(**extra), kid=self.victim.key_id)

    def self_signed(self, **extra: Any) -> str:
        return jwt(self.victim.key, self.claims(aud=API_AUD, **extra), kid=self.victim.key_id)

    # ---------------------------------------------------------- where credentials are presented

    def grant(self, assertion: str) -> Any:
        return self.api.client.post("/token", data={"grant_type": JWT_BEARER, "assertion": assertion})

    def probe(self, bearer: str) -> Any:
        """An API call any authenticated caller may make: 200 for a good credential, 401 otherwise."""
        return self.api.call("POST", f"/v1/projects/-/serviceAccounts/{self.victim.email}:testIamPermissions",
                             {"permissions": ["iam.serviceAccounts.get"]}, token=bearer)

    def access_token(self) -> str:
        r = self.grant(self.assertion())
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


def new_account(api: Api, account_id: str) -> Account:
    created = api.create_sa(account_id)
    key = api.ok("POST", f"/v1/projects/-/serviceAccounts/{created['email']}/keys", {})
    info = json.loads(base64.b64decode(key["privateKeyData"]))
    private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return Account(created["email"], created["uniqueId"], info["private_key_id"], private)


@contextmanager
def _world(directory: Path) -> Iterator[World]:
    """What conftest's ``inproc`` builds (a keyless on a FrozenClock), plus two accounts with a key each."""
    loop = asyncio.new_event_loop()
    store = SqliteStore(directory / "keyless.db")
    loop.run_until_complete(store.open())
    clock = FrozenClock(time.time())
    kl = Keyless(store, clock, Settings(public_url="http://testserver"), MasterKey(secrets.token_bytes(32)))
    boot = loop.run_until_complete(bootstrap(kl, directory))
    api = Api(InProcess(kl, clock, json.loads(boot.owner_file.read_text()), loop))
    try:
        yield World(api, new_account(api, "victim-sa"), new_account(api, "other-sa"))
    finally:
        api.client.close()
        loop.run_until_complete(store.close())
        loop.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A world of its own, for tests that delete, disable or move the clock."""
    with _world(tmp_path) as w:
        yield w


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for the tests that only present credentials (they change nothing)."""
    with _world(tmp_path_factory.mktemp("forgery")) as w:
        yield w


@lru_cache(maxsize=1)
def stranger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def assert_grant_refused(world: World, assertion: str) -> None:
    r = world.grant(assertion)
    assert r.status_code in (400, 401), f"{r.status_code}: {r.text}"
    body = r.json()
    assert is_oauth_error(body), body
    assert "access_token" not in body and "id_token" not in body, body


def assert_api_refused(world: World, bearer: str) -> None:
    assert_google_error(world.probe(bearer), 401, "UNAUTHENTICATED")


# ------------------------------------------------------------------ the forgeries, by construction


def _alg_none(w: World, claims: dict[str, Any]) -> str:
    return encode({"alg": "none", "typ": "JWT", "kid": w.victim.key_id}, claims) + "."


def _alg_none_upper(w: World, claims: dict[str, Any]) -> str:
    return encode({"alg": "NONE", "typ": "JWT"}, claims) + "."


def _hs256_public_key(w: World, claims: dict[str, Any]) -> str:
    """The classic key-confusion attack: HMAC with the published public key (PEM, as /x509 serves it)."""
    pem = w.victim.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = encode({"alg": "HS256", "typ": "JWT", "kid": w.victim.key_id}, claims)
    return f"{signing_input}.{b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


def _hs256_certificate(w: World, claims: dict[str, Any]) -> str:
    certs = w.api.client.get(f"/service_accounts/v1/metadata/x509/{w.victim.email}").json()
    secret = certs[w.victim.key_id].encode()
    signing_input = encode({"alg": "HS256", "typ": "JWT", "kid": w.victim.key_id}, claims)
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _wrong_key_same_kid(w: World, claims: dict[str, Any]) -> str:
    stranger = stranger_key()
    return jwt(stranger, claims, kid=w.victim.key_id)


def _wrong_key_no_kid(w: World, claims: dict[str, Any]) -> str:
    stranger = stranger_key()
    return jwt(stranger, claims)


def _kid_of_other_account(w: World, claims: dict[str, Any]) -> str:
    """Claims of the victim signed with another account's key, the kid naming that key."""
    return jwt(w.other.key, claims, kid=w.other.key_id)


def _other_key_no_kid(w: World, claims: dict[str, Any]) -> str:
    return jwt(w.other.key, claims)


def _payload_altered(w: World, claims: dict[str, Any]) -> str:
    """Signed for the other account, then the payload swapped for the victim's claims."""
    other = {**claims, "iss": w.other.email, "sub": w.other.email}
    header, _, signature = jwt(w.other.key, other, kid=w.other.key_id).split(".")
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


def _signature_altered(w: World, claims: dict[str, Any]) -> str:
    header, payload, signature = jwt(w.victim.key, claims, kid=w.victim.key_id).split(".")
    raw = bytearray(b64url_decode(signature))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def _signature_stripped(w: World, claims: dict[str, Any]) -> str:
    header, payload, _ = jwt(w.victim.key, claims, kid=w.victim.key_id).split(".")
    return f"{header}.{payload}."


def _rs512(w: World, claims: dict[str, Any]) -> str:
    signing_input = encode({"alg": "RS512", "typ": "JWT", "kid": w.victim.key_id}, claims)
    return f"{signing_input}.{rs256(w.victim.key, signing_input, hashes.SHA512())}"


def _ps256(w: World, claims: dict[str, Any]) -> str:
    signing_input = encode({"alg": "PS256", "typ": "JWT", "kid": w.victim.key_id}, claims)
    signature = w.victim.key.sign(signing_input.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                                      salt_length=32), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def _jwk_embedded(w: World, claims: dict[str, Any]) -> str:
    """A header carrying its own key (jwk / jku / x5u): the token must be checked against the account's keys."""
    stranger = stranger_key()
    numbers = stranger.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB", "kid": w.victim.key_id}
    return jwt(stranger, claims, header={"jwk": jwk, "jku": "http://evil.example/jwks", "x5u": "http://evil.example"})


def _kid_injection(kid: Any) -> Callable[[World, dict[str, Any]], str]:
    def make(w: World, claims: dict[str, Any]) -> str:
        # Signed with the victim's real key: only the kid is wrong, so only the kid can be refused.
        return jwt(w.victim.key, claims, kid=kid)
    return make


def _kid_suffixed(w: World, claims: dict[str, Any]) -> str:
    return jwt(w.other.key, claims, kid=w.victim.key_id + "' OR key_id='" + w.other.key_id)


SIGNATURE_FORGERIES: dict[str, Callable[[World, dict[str, Any]], str]] = {
    "alg-none": _alg_none,
    "alg-NONE": _alg_none_upper,
    "hs256-public-key-as-secret": _hs256_public_key,
    "hs256-certificate-as-secret": _hs256_certificate,
    "wrong-key-same-kid": _wrong_key_same_kid,
    "wrong-key-no-kid": _wrong_key_no_kid,
    "kid-of-other-account": _kid_of_other_account,
    "other-account-key-no-kid": _other_key_no_kid,
    "payload-altered": _payload_altered,
    "signature-altered": _signature_altered,
    "signature-stripped": _signature_stripped,
    "rs512": _rs512,
    "ps256": _ps256,
    "embedded-jwk-jku-x5u": _jwk_embedded,
    "kid-path-traversal": _kid_injection("../../../../etc/passwd"),
    "kid-sql": _kid_injection("x' OR '1'='1"),
    "kid-sql-union": _kid_suffixed,
    "kid-null-byte": _kid_injection("\u0000"),
    "kid-list": _kid_injection(["a", "b"]),
    "kid-object": _kid_injection({"$ne": None}),
    "kid-number": _kid_injection(0),
    "kid-empty": _kid_injection(""),
}


def _claim_flaws(w: World, aud: str) -> dict[str, dict[str, Any]]:
    now = w.now
    return {
        "expired": {"iat": now - 3600 - 2 * SKEW, "exp": now - 2 * SKEW},
        "expired-just-past-skew": {"iat": now - 1000, "exp": now - SKEW - 5},
        "issued-in-the-future": {"iat": now + SKEW + 120, "exp": now + SKEW + 600},
        "not-before-in-the-future": {"nbf": now + SKEW + 120},
        "lifetime-over-an-hour": {"iat": now, "exp": now + 3601 + 10},
        "wrong-audience": {"aud": "https://evil.example.com/token"},
        "audience-list-without-ours": {"aud": ["https://evil.example.com/"]},
        "no-exp": {"exp": None},
        "no-iat": {"iat": None},
        "exp-as-string": {"exp": str(now + 600)},
        "iss-other-account": {"iss": w.other.email, "sub": w.other.email},
        "iss-sub-mismatch": {"sub": w.other.email},
        "unknown-issuer": {"iss": "nobody@keyless-dev.iam.gserviceaccount.com",
                           "sub": "nobody@keyless-dev.iam.gserviceaccount.com"},
    }


def _claims_for(w: World, aud: str, flaw: dict[str, Any]) -> dict[str, Any]:
    claims = w.claims(aud=aud)
    for name, value in flaw.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


CLAIM_FLAWS = [
    "expired", "expired-just-past-skew", "issued-in-the-future", "not-before-in-the-future",
    "lifetime-over-an-hour", "wrong-audience", "audience-list-without-ours", "no-exp", "no-iat", "exp-as-string",
    "iss-other-account", "iss-sub-mismatch", "unknown-issuer"]


# ------------------------------------------------------------------ controls


def test_controls_are_accepted(shared: World) -> None:
    r = shared.grant(shared.assertion())
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert shared.probe(token).status_code == 200
    assert shared.probe(shared.self_signed()).status_code == 200
    # Within the documented skew, early and late tokens are still good.
    assert shared.grant(shared.assertion(iat=shared.now + SKEW - 30, exp=shared.now + SKEW + 600)).status_code == 200
    assert shared.probe(shared.self_signed(iat=shared.now - 1000, exp=shared.now - SKEW + 30)).status_code == 200


# ------------------------------------------------------------------ /token


@pytest.mark.parametrize("forgery", list(SIGNATURE_FORGERIES))
def test_forged_assertion_is_refused_on_token(shared: World, forgery: str) -> None:
    assert_grant_refused(shared, SIGNATURE_FORGERIES[forgery](shared, shared.claims()))


@pytest.mark.parametrize("flaw", CLAIM_FLAWS)
def test_flawed_assertion_is_refused_on_token(shared: World, flaw: str) -> None:
    claims = _claims_for(shared, TOKEN_AUD, _claim_flaws(shared, TOKEN_AUD)[flaw])
    assert_grant_refused(shared, jwt(shared.victim.key, claims, kid=shared.victim.key_id))


def test_assertion_replayed_after_its_exp_is_refused(world: World) -> None:
    assertion = world.assertion(lifetime=600)
    assert world.grant(assertion).status_code == 200
    world.api.clock.advance(600 + SKEW + 1)
    assert_grant_refused(world, assertion)


def test_assertion_of_a_deleted_account_is_refused(world: World) -> None:
    assertion = world.assertion()
    world.api.ok("DELETE", f"/v1/projects/-/serviceAccounts/{world.victim.email}")
    assert_grant_refused(world, assertion)


def test_assertion_of_a_disabled_account_is_refused(world: World) -> None:
    assertion = world.assertion()
    world.api.ok("POST", f"/v1/projects/-/serviceAccounts/{world.victim.email}:disable", {})
    assert_grant_refused(world, assertion)


@pytest.mark.parametrize("with_kid", [True, False])
def test_assertion_signed_by_a_disabled_or_deleted_key_is_refused(world: World, with_kid: bool) -> None:
    claims = world.claims()
    assertion = jwt(world.victim.key, claims, kid=world.victim.key_id if with_kid else None)
    key_path = f"/v1/projects/-/serviceAccounts/{world.victim.email}/keys/{world.victim.key_id}"
    world.api.ok("POST", f"{key_path}:disable", {})
    assert_grant_refused(world, assertion)
    world.api.ok("DELETE", key_path)
    assert_grant_refused(world, assertion)


# ------------------------------------------------------------------ self-signed JWTs on the API


@pytest.mark.parametrize("forgery", list(SIGNATURE_FORGERIES))
def test_forged_self_signed_jwt_is_refused_on_the_api(shared: World, forgery: str) -> None:
    assert_api_refused(shared, SIGNATURE_FORGERIES[forgery](shared, shared.claims(aud=API_AUD)))


@pytest.mark.parametrize("flaw", CLAIM_FLAWS)
def test_flawed_self_signed_jwt_is_refused_on_the_api(shared: World, flaw: str) -> None:
    claims = _claims_for(shared, API_AUD, _claim_flaws(shared, API_AUD)[flaw])
    assert_api_refused(shared, jwt(shared.victim.key, claims, kid=shared.victim.key_id))


@pytest.mark.parametrize("aud", ["https://iamcredentials.evil.example/", "https://www.evil.example/",
                                 "http://iamcredentials.googleapis.com/",
                                 "https://iamcredentials.googleapis.com.evil.example/", "https://evil.example/",
                                 "https://storage.googleapis.com/", ""])
def test_self_signed_jwt_for_another_audience_is_refused(shared: World, aud: str) -> None:
    assert_api_refused(shared, jwt(shared.victim.key, shared.claims(aud=API_AUD) | {"aud": aud},
                                  kid=shared.victim.key_id))


def test_self_signed_jwt_of_deleted_account_disabled_account_or_key_is_refused(world: World) -> None:
    token = world.self_signed()
    sa = f"/v1/projects/-/serviceAccounts/{world.victim.email}"
    world.api.ok("POST", f"{sa}/keys/{world.victim.key_id}:disable", {})
    assert_api_refused(world, token)
    world.api.ok("POST", f"{sa}/keys/{world.victim.key_id}:enable", {})
    assert world.probe(token).status_code == 200
    world.api.ok("POST", f"{sa}:disable", {})
    assert_api_refused(world, token)
    world.api.ok("POST", f"{sa}:enable", {})
    world.api.ok("DELETE", sa)
    assert_api_refused(world, token)


def test_self_signed_jwt_is_refused_after_its_exp(world: World) -> None:
    token = world.self_signed(lifetime=600)
    assert world.probe(token).status_code == 200
    world.api.clock.advance(600 + SKEW + 1)
    assert_api_refused(world, token)


# ------------------------------------------------------------------ access tokens on the API


def _tamper_claims(token: str, change: Callable[[dict[str, Any]], None]) -> str:
    body, mac = token.removeprefix("ya29.").split(".")
    claims = json.loads(b64url_decode(body))
    change(claims)
    return f"ya29.{b64url(json.dumps(claims, separators=(',', ':')).encode())}.{mac}"


def _access_forgeries(world: World, token: str) -> dict[str, str]:
    body, mac = token.removeprefix("ya29.").split(".")
    raw_mac = bytearray(b64url_decode(mac))
    raw_mac[0] ^= 0x80
    owner_token = world.api.owner_token
    return {
        "payload-principal-swapped": _tamper_claims(token, lambda c: c.update(p=world.other.unique_id)),
        "payload-made-owner": _tamper_claims(owner_token, lambda c: c.update(s=[CLOUD, "x"])),
        "payload-expiry-extended": _tamper_claims(token, lambda c: c.update(e=c["e"] + 86400)),
        "payload-kind-flipped": _tamper_claims(token, lambda c: c.update(k="u")),
        "mac-altered": f"ya29.{body}.{b64url(bytes(raw_mac))}",
        "mac-stripped": f"ya29.{body}.",
        "mac-missing": f"ya29.{body}",
        "mac-truncated": f"ya29.{body}.{mac[:10]}",
        "mac-of-another-key": f"ya29.{body}.{b64url(hmac.new(b'k' * 32, body.encode(), hashlib.sha256).digest())}",
        "prefix-dropped": token.removeprefix("ya29."),
        "prefix-changed": "ya30." + token.removeprefix("ya29."),
        "oversized": token + "A" * 5000,
        "whitespace-inside": token[:20] + " " + token[20:],
    }


FORGED_ACCESS = ["payload-principal-swapped", "payload-made-owner", "payload-expiry-extended", "payload-kind-flipped",
                 "mac-altered", "mac-stripped", "mac-missing", "mac-truncated", "mac-of-another-key",
                 "prefix-dropped", "prefix-changed", "oversized", "whitespace-inside"]


@pytest.mark.parametrize("forgery", FORGED_ACCESS)
def test_tampered_access_token_is_refused(world: World, forgery: str) -> None:
    token = world.access_token()
    assert world.probe(token).status_code == 200
    forged = _access_forgeries(world, token)[forgery]
    assert_api_refused(world, forged)
    r = world.api.client.post("/tokeninfo", data={"access_token": forged})
    assert r.status_code == 400 and r.json().get("error") == "invalid_token", r.text


def test_access_token_of_a_deleted_account_is_refused(world: World) -> None:
    token = world.access_token()
    world.api.ok("DELETE", f"/v1/projects/-/serviceAccounts/{world.victim.email}")
    assert_api_refused(world, token)


@pytest.mark.parametrize("change", ["disable", "delete"])
def test_access_token_minted_with_a_disabled_or_deleted_key_is_refused(world: World, change: str) -> None:
    token = world.access_token()
    key_path = f"/v1/projects/-/serviceAccounts/{world.victim.email}/keys/{world.victim.key_id}"
    if change == "disable":
        world.api.ok("POST", f"{key_path}:disable", {})
    else:
        world.api.ok("DELETE", key_path)
    assert_api_refused(world, token)


def test_access_token_is_refused_after_expiry_and_after_revoke(world: World) -> None:
    token = world.access_token()
    other = world.access_token()
    assert world.api.client.post("/revoke", data={"token": other}).status_code == 200
    assert_api_refused(world, other)
    world.api.clock.advance(3600)
    assert_api_refused(world, token)


def test_impersonated_token_dies_with_its_target(world: World) -> None:
    world.api.grant_owner_token_creator(world.victim.email)
    token = world.api.sa_token(world.victim.email)["accessToken"]
    assert world.probe(token).status_code == 200
    world.api.ok("POST", f"/v1/projects/-/serviceAccounts/{world.victim.email}:disable", {})
    assert_api_refused(world, token)


def test_forged_id_token_is_refused_by_tokeninfo(shared: World) -> None:
    certs = shared.api.client.get("/oauth2/v1/certs").json()
    issuer_kid, issuer_pem = next(iter(certs.items()))
    claims = {"iss": "https://accounts.google.com", "aud": "https://x.example", "sub": shared.victim.unique_id,
              "email": shared.victim.email, "iat": shared.now, "exp": shared.now + 600}
    stranger = stranger_key()
    hs_input = encode({"alg": "HS256", "typ": "JWT", "kid": issuer_kid}, claims)
    forged = {
        "alg-none": encode({"alg": "none", "typ": "JWT", "kid": issuer_kid}, claims) + ".",
        "hs256-issuer-certificate": f"{hs_input}."
                                    + b64url(hmac.new(issuer_pem.encode(), hs_input.encode(), hashlib.sha256).digest()),
        "stranger-key-issuer-kid": jwt(stranger, claims, kid=issuer_kid),
        # A service account can have any claims signed with its own key (signJwt): that is not an ID token.
        "service-account-key": jwt(shared.victim.key, claims, kid=shared.victim.key_id),
        "service-account-key-issuer-kid": jwt(shared.victim.key, claims, kid=issuer_kid),
    }
    for name, token in forged.items():
        r = shared.api.client.get("/tokeninfo", params={"id_token": token})
        assert r.status_code == 400 and r.json().get("error") == "invalid_token", (name, r.text)
