"""System-managed key rotation on the frozen clock, and the published certificate sets staying consistent."""

from __future__ import annotations

import base64
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.http.helpers import Api, assert_google_error

DAY = 86400
ROTATION = 14 * DAY


def sign_blob(api: Api, email: str, data: bytes = b"payload") -> tuple[str, bytes]:
    out = api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}:signBlob",
                 {"payload": base64.b64encode(data).decode()})
    return out["keyId"], base64.b64decode(out["signedBlob"])


def account_certs(api: Api, email: str) -> dict[str, str]:
    r = api.client.get(f"/service_accounts/v1/metadata/x509/{email}")
    assert r.status_code == 200, r.text
    certs: dict[str, str] = r.json()
    return certs


def verify(cert_pem: str, data: bytes, signature: bytes) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]


def jwk_matches_cert(jwk: dict[str, str], cert_pem: str) -> bool:
    numbers = x509.load_pem_x509_certificate(cert_pem.encode()).public_key().public_numbers()  # type: ignore[union-attr]

    def b64u(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return bool(jwk["n"] == b64u(numbers.n) and jwk["e"] == b64u(numbers.e))


# ---------------------------------------------------------------- rotation


def test_sign_blob_key_rotates_after_fourteen_days(api: Api, sa: dict[str, Any]) -> None:
    email = sa["email"]
    first, signature = sign_blob(api, email, b"one")
    certs = account_certs(api, email)
    assert list(certs) == [first]
    verify(certs[first], b"one", signature)

    # The same key signs for fourteen days.
    for step in (1, 3600, DAY, ROTATION - DAY - 3600 - 2):
        api.clock.advance(step)
        assert sign_blob(api, email)[0] == first
    # 14 days minus one second after creation: still the same key.
    assert sign_blob(api, email)[0] == first

    api.clock.advance(2)  # one second past fourteen days
    second, signature = sign_blob(api, email, b"two")
    assert second != first
    assert sign_blob(api, email)[0] == second

    # Right after the rotation the retired key is still published next to the new one.
    certs = account_certs(api, email)
    assert set(certs) == {first, second}
    verify(certs[second], b"two", signature)
    listed = api.ok("GET", f"/v1/projects/-/serviceAccounts/{email}/keys", params={"keyTypes": "SYSTEM_MANAGED"})
    assert {k["name"].rsplit("/", 1)[1] for k in listed["keys"]} == {first, second}

    # Two days later only the new key remains.
    api.clock.advance(2 * DAY)
    certs = account_certs(api, email)
    assert set(certs) == {second}
    listed = api.ok("GET", f"/v1/projects/-/serviceAccounts/{email}/keys", params={"keyTypes": "SYSTEM_MANAGED"})
    assert {k["name"].rsplit("/", 1)[1] for k in listed["keys"]} == {second}
    assert sign_blob(api, email)[0] == second


def test_retired_key_stays_published_for_its_retention(api: Api, sa: dict[str, Any]) -> None:
    email = sa["email"]
    first, _ = sign_blob(api, email)
    api.clock.advance(ROTATION + 1)
    second, _ = sign_blob(api, email)
    api.clock.advance(DAY - 1)
    assert set(account_certs(api, email)) == {first, second}
    api.clock.advance(2)
    assert set(account_certs(api, email)) == {second}


def test_rotation_is_per_account(api: Api, sa: dict[str, Any]) -> None:
    other = api.create_sa("second-bot")
    api.grant_owner_token_creator(other["email"])
    a1, _ = sign_blob(api, sa["email"])
    api.clock.advance(7 * DAY)
    b1, _ = sign_blob(api, other["email"])
    assert a1 != b1
    api.clock.advance(7 * DAY + 1)
    a2, _ = sign_blob(api, sa["email"])
    assert a2 != a1
    assert sign_blob(api, other["email"])[0] == b1  # only seven days old
    assert set(account_certs(api, other["email"])) == {b1}


def test_sign_jwt_uses_the_same_rotating_key(api: Api, sa: dict[str, Any]) -> None:
    email = sa["email"]
    key_id, _ = sign_blob(api, email)
    out = api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}:signJwt", {"payload": '{"sub": "me"}'})
    assert out["keyId"] == key_id
    assert jwt.get_unverified_header(out["signedJwt"])["kid"] == key_id
    cert = account_certs(api, email)[key_id]
    public = x509.load_pem_x509_certificate(cert.encode()).public_key()
    # No exp in the payload: signJwt adds one an hour ahead, as Google does.
    assert jwt.decode(out["signedJwt"], public, algorithms=["RS256"], options={"verify_aud": False}) == {
        "sub": "me", "exp": int(api.clock.now()) + 3600}
    api.clock.advance(ROTATION + 1)
    again = api.ok("POST", f"/v1/projects/-/serviceAccounts/{email}:signJwt", {"payload": '{"sub": "me"}'})
    assert again["keyId"] != key_id
    assert sign_blob(api, email)[0] == again["keyId"]


def test_account_metadata_forms_agree(api: Api, sa: dict[str, Any]) -> None:
    email = sa["email"]
    key_id, _ = sign_blob(api, email)
    x509_certs = account_certs(api, email)
    jwks = api.client.get(f"/service_accounts/v1/metadata/jwk/{email}").json()["keys"]
    raw = api.client.get(f"/service_accounts/v1/metadata/raw/{email}").json()
    robot = api.client.get(f"/robot/v1/metadata/x509/{email}").json()
    assert set(x509_certs) == {j["kid"] for j in jwks} == set(raw) == set(robot) == {key_id}
    assert jwk_matches_cert(jwks[0], x509_certs[key_id])
    assert raw[key_id].startswith("-----BEGIN PUBLIC KEY-----")


def test_metadata_of_unknown_account_is_404(api: Api) -> None:
    r = api.client.get("/service_accounts/v1/metadata/x509/ghost-bot@keyless-dev.iam.gserviceaccount.com")
    assert_google_error(r, 404, "NOT_FOUND")


# ---------------------------------------------------------------- the issuer's certs


def issuer_sets(api: Api) -> tuple[dict[str, str], list[dict[str, str]]]:
    v1 = api.client.get("/oauth2/v1/certs")
    v3 = api.client.get("/oauth2/v3/certs")
    assert v1.status_code == 200 and v3.status_code == 200
    assert "max-age" in v1.headers["cache-control"]
    return v1.json(), v3.json()["keys"]


def assert_consistent(v1: dict[str, str], v3: list[dict[str, str]]) -> None:
    assert v1, "no certificates published"
    assert sorted(v1) == sorted(j["kid"] for j in v3)
    for jwk in v3:
        assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"
        assert v1[jwk["kid"]].startswith("-----BEGIN CERTIFICATE-----")
        assert jwk_matches_cert(jwk, v1[jwk["kid"]])


def test_oauth2_certs_are_non_empty_and_consistent(api: Api) -> None:
    v1, v3 = issuer_sets(api)
    assert_consistent(v1, v3)
    assert len(v1) == 1


def test_id_tokens_verify_against_the_published_certs(api: Api, sa: dict[str, Any]) -> None:
    out = api.ok("POST", f"/v1/projects/-/serviceAccounts/{sa['email']}:generateIdToken",
                 {"audience": "https://service.example.com", "includeEmail": True})
    token = out["token"]
    v1, _v3 = issuer_sets(api)
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid in v1
    public = x509.load_pem_x509_certificate(v1[kid].encode()).public_key()
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="https://service.example.com")
    assert claims["email"] == sa["email"]
    assert claims["sub"] == sa["uniqueId"]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iat"] == int(api.clock.now())


def test_issuer_rotation_keeps_v1_and_v3_consistent(api: Api, sa: dict[str, Any]) -> None:
    (old_kid,) = issuer_sets(api)[0]
    api.clock.advance(ROTATION + 1)
    token = api.ok("POST", f"/v1/projects/-/serviceAccounts/{sa['email']}:generateIdToken",
                   {"audience": "https://service.example.com"})["token"]
    new_kid = jwt.get_unverified_header(token)["kid"]
    assert new_kid != old_kid
    v1, v3 = issuer_sets(api)
    assert set(v1) == {old_kid, new_kid}
    assert_consistent(v1, v3)
    api.clock.advance(2 * DAY)
    v1, v3 = issuer_sets(api)
    assert set(v1) == {new_kid}
    assert_consistent(v1, v3)
    # The token signed with the new key verifies against what is published (pyjwt's clock is the real one,
    # not the frozen one, so time claims are not checked here).
    public = x509.load_pem_x509_certificate(v1[new_kid].encode()).public_key()
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="https://service.example.com",
                        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert claims["sub"] == sa["uniqueId"]
