"""IAM details beyond the seed flows: legacy IAM v1 signing, uploaded keys, groups, domains and special
members, deleted-member rewrites, tokeninfo and revocation, self-signed JWTs, allowedLocations."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt as pyjwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from keyless.crypto.keys import generate_key_pair
from tests.conftest import CLOUD, Server
from tests.e2e.support import TOKEN_CREATOR, google_error, mint, probe, sa_token, server_now


def _certs(server: Server, email: str) -> dict[str, str]:
    return dict(requests.get(f"{server.url}/service_accounts/v1/metadata/x509/{email}", timeout=10).json())


def test_legacy_iam_v1_sign_blob_and_sign_jwt(server: Server) -> None:
    sa = server.create_sa()
    server.grant(sa, "user:owner@keyless.local")
    path = f"/v1/projects/keyless-dev/serviceAccounts/{sa}"
    signed = server.owner("POST", f"{path}:signBlob", {"bytesToSign": base64.b64encode(b"legacy").decode()})
    cert = x509.load_pem_x509_certificate(_certs(server, sa)[signed["keyId"]].encode())
    cert.public_key().verify(base64.b64decode(signed["signature"]), b"legacy",  # type: ignore[call-arg,union-attr]
                             padding.PKCS1v15(), hashes.SHA256())  # type: ignore[arg-type]
    before = server_now(server, server.owner_token, sa)
    jwt_out = server.owner("POST", f"{path}:signJwt", {"payload": json.dumps({"sub": "x"})})
    after = server_now(server, server.owner_token, sa)
    claims = pyjwt.decode(jwt_out["signedJwt"], options={"verify_signature": False})
    # IAM v1 adds exp an hour ahead (and nothing else), as Google documents.
    assert set(claims) == {"sub", "exp"} and before + 3600 <= claims["exp"] <= after + 3600


def test_uploaded_key_authenticates_jwt_bearer_grants(server: Server) -> None:
    sa = server.create_sa()
    pair = generate_key_pair("uploaded", time.time() - 60)
    uploaded = server.owner("POST", f"/v1/projects/-/serviceAccounts/{sa}/keys:upload",
                            {"publicKeyData": base64.b64encode(pair.certificate_pem).decode()})
    key_id = uploaded["name"].rsplit("/", 1)[1]
    assert uploaded["keyOrigin"] == "USER_PROVIDED" and uploaded["keyType"] == "USER_MANAGED"
    now = int(time.time())
    assertion = pyjwt.encode({"iss": sa, "scope": CLOUD, "aud": "https://oauth2.googleapis.com/token",
                              "iat": now, "exp": now + 600}, pair.private_pkcs8_pem, algorithm="RS256",
                             headers={"kid": key_id})
    r = requests.post(f"{server.url}/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                   "assertion": assertion}, timeout=10)
    assert r.status_code == 200 and r.json()["access_token"].startswith("ya29.")
    bad = server.owner("POST", f"/v1/projects/-/serviceAccounts/{sa}/keys:upload",
                       {"publicKeyData": base64.b64encode(b"not a certificate").decode()}, expect=400)
    assert bad["error"]["status"] == "INVALID_ARGUMENT"


def test_group_domain_and_all_authenticated_members(server: Server, tmp_path: Path) -> None:
    target = server.create_sa()
    caller = server.create_sa()
    token = sa_token(server, caller, tmp_path)
    google_error(mint(server, token, target), 403, "PERMISSION_DENIED")
    group = f"team-{target.split('@')[0]}@example.com"
    server.owner("PUT", f"/keyless/v1/groups/{group}", {"members": [f"serviceAccount:{caller}"]})
    server.grant(target, f"group:{group}")
    assert mint(server, token, target).status_code == 200
    server.owner("PUT", f"/keyless/v1/groups/{group}", {"members": []})
    google_error(mint(server, token, target), 403, "PERMISSION_DENIED")
    server.owner("DELETE", f"/keyless/v1/groups/{group}")
    # allAuthenticatedUsers lets any authenticated caller in; domain: matches users of that domain only.
    server.grant(target, "domain:keyless.local")
    assert server.owner("POST", f"/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                        {"scope": [CLOUD]}, expect=200)
    google_error(mint(server, token, target), 403, "PERMISSION_DENIED")
    server.grant(target, "allAuthenticatedUsers")
    assert mint(server, token, target).status_code == 200
    google_error(requests.post(f"{server.url}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                               json={"scope": [CLOUD]}, timeout=10), 401, "UNAUTHENTICATED")


def test_deleting_an_account_rewrites_its_bindings_and_undelete_restores_them(server: Server) -> None:
    target = server.create_sa()
    member = server.create_sa()
    uid = server.owner("GET", f"/v1/projects/-/serviceAccounts/{member}")["uniqueId"]
    server.grant(target, f"serviceAccount:{member}")
    server.owner("DELETE", f"/v1/projects/-/serviceAccounts/{member}")
    members = server.owner("POST", f"/v1/projects/-/serviceAccounts/{target}:getIamPolicy")["bindings"][0]["members"]
    assert members == [f"deleted:serviceAccount:{member}?uid={uid}"]
    # A new account with the same email inherits nothing.
    server.create_sa(member.split("@")[0])
    new_uid = server.owner("GET", f"/v1/projects/-/serviceAccounts/{member}")["uniqueId"]
    assert new_uid != uid
    assert server.owner("POST", f"/v1/projects/-/serviceAccounts/{target}:getIamPolicy")["bindings"][0][
        "members"] == [f"deleted:serviceAccount:{member}?uid={uid}"]
    server.owner("DELETE", f"/v1/projects/-/serviceAccounts/{member}")
    restored = server.owner("POST", f"/v1/projects/-/serviceAccounts/{uid}:undelete", {})["restoredAccount"]
    assert restored["uniqueId"] == uid
    assert server.owner("POST", f"/v1/projects/-/serviceAccounts/{target}:getIamPolicy")["bindings"][0][
        "members"] == [f"serviceAccount:{member}"]


def test_tokeninfo_and_revocation(server: Server, tmp_path: Path) -> None:
    sa = server.create_sa()
    token = sa_token(server, sa, tmp_path)
    info = requests.post(f"{server.url}/tokeninfo", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert info["email"] == sa and CLOUD in info["scope"].split() and int(info["expires_in"]) > 3000
    assert requests.get(f"{server.url}/oauth2/v3/tokeninfo", params={"access_token": token},
                        timeout=10).json()["email"] == sa
    assert probe(server, token, sa).status_code == 200
    assert requests.post(f"{server.url}/revoke", data={"token": token}, timeout=10).status_code == 200
    google_error(probe(server, token, sa), 401, "UNAUTHENTICATED")
    gone = requests.get(f"{server.url}/oauth2/v3/tokeninfo", params={"access_token": token}, timeout=10)
    assert gone.status_code == 400 and gone.json()["error"] == "invalid_token"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    google_error(probe(server, forged, sa), 401, "UNAUTHENTICATED")


def test_self_signed_jwt_is_a_bearer_credential(server: Server, tmp_path: Path) -> None:
    sa = server.create_sa()
    key = json.loads(server.key_file(sa, tmp_path / "k.json").read_text())
    now = int(time.time())
    claims = {"iss": sa, "sub": sa, "aud": "https://iamcredentials.googleapis.com/", "iat": now, "exp": now + 600}
    token = pyjwt.encode(claims, key["private_key"], algorithm="RS256", headers={"kid": key["private_key_id"]})
    assert probe(server, token, sa).status_code == 200
    scoped = {k: v for k, v in claims.items() if k != "aud"} | {"scope": CLOUD}
    no_kid = pyjwt.encode(scoped, key["private_key"], algorithm="RS256")
    assert probe(server, no_kid, sa).status_code == 200
    for bad in ({**claims, "aud": "https://evil.example.com/"}, {**claims, "exp": now + 7200},
                {**claims, "sub": "someone@else"}):
        token = pyjwt.encode(bad, key["private_key"], algorithm="RS256", headers={"kid": key["private_key_id"]})
        google_error(probe(server, token, sa), 401, "UNAUTHENTICATED")
    other = serialization.load_pem_private_key(generate_key_pair("x", now).private_pkcs8_pem, None)
    wrong_key = pyjwt.encode(claims, other, algorithm="RS256", headers={"kid": key["private_key_id"]})  # type: ignore[arg-type]
    google_error(probe(server, wrong_key, sa), 401, "UNAUTHENTICATED")


def test_allowed_locations(server: Server, tmp_path: Path) -> None:
    sa = server.create_sa()
    token = sa_token(server, sa, tmp_path)
    r = requests.get(f"{server.url}/v1/projects/-/serviceAccounts/{sa}/allowedLocations",
                     headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.json() == {"locations": [], "encodedLocations": "0x0"}
    missing = requests.get(f"{server.url}/v1/projects/-/serviceAccounts/nobody@keyless-dev.iam.gserviceaccount.com"
                           "/allowedLocations", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    # The same answer for any account: it says nothing of whether one exists.
    assert missing.status_code == 200 and missing.json() == r.json()


def test_token_creator_on_the_project_applies_to_every_account_in_it(server: Server, tmp_path: Path) -> None:
    project = f"proj-{int(time.time() * 1000) % 10**8}"
    server.owner("POST", "/keyless/v1/projects", {"projectId": project})
    target = server.create_sa(project=project)
    caller = server.create_sa()
    token = sa_token(server, caller, tmp_path)
    google_error(mint(server, token, target), 403, "PERMISSION_DENIED")
    policy = server.owner("POST", f"/v1/projects/{project}:getIamPolicy", {})
    policy["bindings"].append({"role": TOKEN_CREATOR, "members": [f"serviceAccount:{caller}"]})
    server.owner("POST", f"/v3/projects/{project}:setIamPolicy", {"policy": policy})
    assert mint(server, token, target).status_code == 200


def test_refresh_grant_with_openid_returns_the_users_id_token(server: Server) -> None:
    owner = json.loads(server.owner_file.read_text())
    r = requests.post(f"{server.url}/token", data={
        "grant_type": "refresh_token", "client_id": owner["client_id"], "client_secret": owner["client_secret"],
        "refresh_token": owner["refresh_token"]}, timeout=10).json()
    from google.auth.transport.requests import Request as GoogleRequest
    from google.oauth2 import id_token

    claims = id_token.verify_token(r["id_token"], GoogleRequest(), audience=owner["client_id"],
                                   certs_url=f"{server.url}/oauth2/v1/certs")
    assert claims["email"] == "owner@keyless.local" and claims["aud"] == owner["client_id"]
    narrow = requests.post(f"{server.url}/token", data={
        "grant_type": "refresh_token", "client_id": owner["client_id"], "client_secret": owner["client_secret"],
        "refresh_token": owner["refresh_token"], "scope": CLOUD}, timeout=10).json()
    assert "id_token" not in narrow
