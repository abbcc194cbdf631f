"""Service-account keys over HTTP: create, list, get (public key forms), disable, enable, delete, and use."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.http.helpers import CLOUD, PROJECT, Api, assert_google_error, assert_oauth_error

SYSTEM_KEYS = {"keyTypes": "SYSTEM_MANAGED"}
USER_KEYS = {"keyTypes": "USER_MANAGED"}


def keys_path(sa: dict[str, Any]) -> str:
    return f"/v1/projects/-/serviceAccounts/{sa['email']}/keys"


def create_key(api: Api, sa: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    created = api.ok("POST", keys_path(sa), {})
    key_file = json.loads(base64.b64decode(created["privateKeyData"]))
    return created["name"].rsplit("/", 1)[1], created, key_file


def spki(pem_or_key: Any) -> bytes:
    key = pem_or_key.public_key() if hasattr(pem_or_key, "public_key") else pem_or_key
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def test_create_key_returns_a_credentials_file(api: Api, sa: dict[str, Any]) -> None:
    key_id, created, key_file = create_key(api, sa)
    assert created["name"] == f"projects/{PROJECT}/serviceAccounts/{sa['email']}/keys/{key_id}"
    assert created["privateKeyType"] == "TYPE_GOOGLE_CREDENTIALS_FILE"
    assert created["keyType"] == "USER_MANAGED"
    assert created["keyAlgorithm"] == "KEY_ALG_RSA_2048"
    assert created["validAfterTime"].endswith("Z") and created["validBeforeTime"] > created["validAfterTime"]
    assert key_file["type"] == "service_account"
    assert key_file["private_key_id"] == key_id
    assert key_file["client_email"] == sa["email"]
    assert key_file["client_id"] == sa["uniqueId"]
    assert key_file["project_id"] == PROJECT
    assert key_file["token_uri"] == "http://testserver/token"
    private = serialization.load_pem_private_key(key_file["private_key"].encode(), password=None)
    assert private.key_size == 2048  # type: ignore[union-attr]


def test_list_get_disable_enable_delete(api: Api, sa: dict[str, Any]) -> None:
    key_id, created, key_file = create_key(api, sa)
    key_path = f"{keys_path(sa)}/{key_id}"

    listed = api.ok("GET", keys_path(sa), params=USER_KEYS)["keys"]
    assert [k["name"] for k in listed] == [created["name"]]
    assert "privateKeyData" not in listed[0]

    got = api.ok("GET", key_path, params={"publicKeyType": "TYPE_X509_PEM_FILE"})
    assert got["name"] == created["name"]
    pem = base64.b64decode(got["publicKeyData"])
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    cert = x509.load_pem_x509_certificate(pem)
    private = serialization.load_pem_private_key(key_file["private_key"].encode(), password=None)
    assert spki(cert) == spki(private)

    raw = api.ok("GET", key_path, params={"publicKeyType": "TYPE_RAW_PUBLIC_KEY"})
    assert base64.b64decode(raw["publicKeyData"]) == spki(private)
    assert "publicKeyData" not in api.ok("GET", key_path)

    assert api.ok("POST", f"{key_path}:disable", {}) == {}
    assert api.ok("GET", key_path)["disabled"] is True
    assert api.ok("GET", keys_path(sa), params=USER_KEYS)["keys"][0]["disabled"] is True
    assert api.ok("POST", f"{key_path}:enable", {}) == {}
    assert "disabled" not in api.ok("GET", key_path)

    assert api.ok("DELETE", key_path) == {}
    assert_google_error(api.call("GET", key_path), 404, "NOT_FOUND")
    assert api.ok("GET", keys_path(sa), params=USER_KEYS)["keys"] == []
    assert_google_error(api.call("DELETE", key_path), 404, "NOT_FOUND")


def test_disable_accepts_a_reason(api: Api, sa: dict[str, Any]) -> None:
    key_id, _, _ = create_key(api, sa)
    r = api.call("POST", f"{keys_path(sa)}/{key_id}:disable",
                 {"serviceAccountKeyDisableReason": "SERVICE_ACCOUNT_KEY_DISABLE_REASON_USER_INITIATED"})
    assert r.status_code == 200


def test_invalid_public_key_type_is_400(api: Api, sa: dict[str, Any]) -> None:
    key_id, _, _ = create_key(api, sa)
    r = api.call("GET", f"{keys_path(sa)}/{key_id}", params={"publicKeyType": "TYPE_PKCS12"})
    assert_google_error(r, 400, "INVALID_ARGUMENT")


def test_invalid_key_types_filter_is_400(api: Api, sa: dict[str, Any]) -> None:
    assert_google_error(api.call("GET", keys_path(sa), params={"keyTypes": "EVERYTHING"}), 400, "INVALID_ARGUMENT")


def test_unknown_key_is_404(api: Api, sa: dict[str, Any]) -> None:
    assert_google_error(api.call("GET", f"{keys_path(sa)}/{'0' * 40}"), 404, "NOT_FOUND")
    assert_google_error(api.call("POST", f"{keys_path(sa)}/{'0' * 40}:disable", {}), 404, "NOT_FOUND")


def test_another_accounts_key_is_404(api: Api, sa: dict[str, Any]) -> None:
    other = api.create_sa("other-bot")
    key_id, _, _ = create_key(api, other)
    assert_google_error(api.call("GET", f"{keys_path(sa)}/{key_id}"), 404, "NOT_FOUND")
    assert_google_error(api.call("DELETE", f"{keys_path(sa)}/{key_id}"), 404, "NOT_FOUND")
    assert api.ok("GET", f"{keys_path(other)}/{key_id}")


def test_system_managed_keys_are_listed_and_cannot_be_deleted(api: Api, sa: dict[str, Any]) -> None:
    signed = api.ok("POST", f"/v1/projects/-/serviceAccounts/{sa['email']}:signBlob", {"payload": "aGk="})
    system = api.ok("GET", keys_path(sa), params=SYSTEM_KEYS)["keys"]
    assert [k["name"].rsplit("/", 1)[1] for k in system] == [signed["keyId"]]
    assert system[0]["keyType"] == "SYSTEM_MANAGED"
    r = api.call("DELETE", f"{keys_path(sa)}/{signed['keyId']}")
    assert_google_error(r, 400, "INVALID_ARGUMENT")
    user_key, _, _ = create_key(api, sa)
    everything = {k["name"].rsplit("/", 1)[1] for k in api.ok("GET", keys_path(sa))["keys"]}
    assert everything == {signed["keyId"], user_key}


def test_user_managed_key_quota(api: Api, sa: dict[str, Any]) -> None:
    for _ in range(10):
        api.ok("POST", keys_path(sa), {})
    assert_google_error(api.call("POST", keys_path(sa), {}), 400, "FAILED_PRECONDITION")


def _assertion(key_file: dict[str, Any], now: float, **claims: Any) -> str:
    payload = {"iss": key_file["client_email"], "aud": key_file["token_uri"], "scope": CLOUD,
               "iat": int(now), "exp": int(now) + 3600, **claims}
    return jwt.encode(payload, key_file["private_key"], algorithm="RS256",
                      headers={"kid": key_file["private_key_id"]})


def test_key_file_grants_tokens_until_disabled(api: Api, sa: dict[str, Any]) -> None:
    key_id, _, key_file = create_key(api, sa)
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    r = api.client.post("/token", data={"grant_type": grant, "assertion": _assertion(key_file, api.clock.now())})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    info = api.client.get("/tokeninfo", params={"access_token": token}).json()
    assert info["email"] == sa["email"]

    api.ok("POST", f"{keys_path(sa)}/{key_id}:disable", {})
    r = api.client.post("/token", data={"grant_type": grant, "assertion": _assertion(key_file, api.clock.now())})
    assert_oauth_error(r, 400, "invalid_grant")
    # A token minted with the key stops authenticating once the key is disabled.
    assert_google_error(api.call("GET", f"/v1/projects/{PROJECT}", token=token), 401, "UNAUTHENTICATED")


def test_key_file_assertion_outside_its_timeframe_is_refused(api: Api, sa: dict[str, Any]) -> None:
    _, _, key_file = create_key(api, sa)
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    stale = _assertion(key_file, api.clock.now() - 7200)
    assert_oauth_error(api.client.post("/token", data={"grant_type": grant, "assertion": stale}), 400,
                       "invalid_grant")


@pytest.mark.parametrize("body", [{"privateKeyType": "TYPE_PKCS12_FILE"}, {"keyAlgorithm": "KEY_ALG_RSA_1024"}])
def test_unsupported_key_requests_are_400(api: Api, sa: dict[str, Any], body: dict[str, Any]) -> None:
    assert_google_error(api.call("POST", keys_path(sa), body), 400, "INVALID_ARGUMENT")


def test_user_managed_keys_are_published_until_deleted(api: Api, sa: dict[str, Any]) -> None:
    key_id, _, key_file = create_key(api, sa)
    certs = api.client.get(f"/service_accounts/v1/metadata/x509/{sa['email']}").json()
    assert key_id in certs
    private = serialization.load_pem_private_key(key_file["private_key"].encode(), password=None)
    assert spki(x509.load_pem_x509_certificate(certs[key_id].encode())) == spki(private)
    api.ok("DELETE", f"{keys_path(sa)}/{key_id}")
    assert key_id not in api.client.get(f"/service_accounts/v1/metadata/x509/{sa['email']}").json()
