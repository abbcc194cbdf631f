"""Every flow of the seed documents, done with the `keyless` CLI alone (a subprocess), as gcloud would do it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.parse
from pathlib import Path

import google.auth.credentials
import requests
from google.auth.transport.requests import Request
from google.cloud.storage._signing import generate_signed_url_v4
from google.oauth2 import id_token

from keyless.cli.storage import verify_signed_url
from tests.cli.support import (
    TOKEN_CREATOR,
    WARNING,
    b64url_json,
    create_sa,
    grant,
    key_file,
    kl,
    tokeninfo,
    uid,
    verify_jwt,
    verify_signature,
)
from tests.conftest import Server

AUDIENCE = "https://my-service.example.com"


def test_service_account_caller_impersonates_the_privilege_bearing_account(server: Server, tmp_path: Path) -> None:
    """000: CALLER_SA gets Token Creator on PRIV_SA, then `auth print-access-token --impersonate-service-account`."""
    caller = create_sa(server, "caller")
    priv = create_sa(server, "priv")
    caller_key = key_file(server, caller, tmp_path / "caller.json")
    assert json.loads(caller_key.read_text())["client_email"] == caller

    refused = kl(server, "--credential-file", str(caller_key), "auth", "print-access-token",
                 f"--impersonate-service-account={priv}", expect=1)
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        WARNING.format(priv),
        f"ERROR: (keyless.auth.print-access-token) Failed to impersonate [{priv}]. Make sure the account that's "
        "trying to impersonate it has access to the service account itself and the "
        "\"roles/iam.serviceAccountTokenCreator\" role. (PERMISSION_DENIED: Permission "
        f"'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).)"]

    policy = grant(server, priv, f"serviceAccount:{caller}")
    assert policy["bindings"] == [{"members": [f"serviceAccount:{caller}"], "role": TOKEN_CREATOR}]
    assert policy["version"] == 1 and policy["etag"]

    proc = kl(server, "--credential-file", str(caller_key), "auth", "print-access-token",
              f"--impersonate-service-account={priv}")
    assert proc.stderr.strip() == WARNING.format(priv)
    token = proc.stdout.strip()
    assert proc.stdout == token + "\n" and token.startswith("ya29.")
    info = tokeninfo(server, token).json()
    assert info["email"] == priv
    assert int(info["expires_in"]) > 3500


def test_user_caller_gets_access_and_id_tokens(server: Server, tmp_path: Path) -> None:
    """000 (user credentials): CALLER_ACCOUNT prints an access token and an ID token for PRIV_SA."""
    priv = create_sa(server, "priv")
    email = f"dev-{uid()}@example.com"
    alice = tmp_path / "alice.json"
    kl(server, "users", "add", email, "--output", str(alice))
    grant(server, priv, f"user:{email}")

    access = kl(server, "auth", "print-access-token", "--impersonate-service-account", priv,
                "--credential-file", str(alice), "--scopes", "cloud-platform,userinfo.email", "--lifetime", "10m")
    info = tokeninfo(server, access.stdout.strip()).json()
    assert info["email"] == priv
    assert int(info["expires_in"]) <= 600
    assert set(info["scope"].split()) == {"https://www.googleapis.com/auth/cloud-platform",
                                          "https://www.googleapis.com/auth/userinfo.email"}

    ident = kl(server, "--credential-file", str(alice), "auth", "print-identity-token",
               f"--impersonate-service-account={priv}", f"--audiences={AUDIENCE}", "--include-email")
    assert ident.stderr.strip() == WARNING.format(priv)
    claims = id_token.verify_token(ident.stdout.strip(), Request(), audience=AUDIENCE,
                                   certs_url=f"{server.url}/oauth2/v1/certs")
    assert claims["email"] == priv and claims["email_verified"] is True

    # A user cannot hold an ID token for an audience itself: gcloud's answer is to impersonate.
    own = kl(server, "--credential-file", str(alice), "auth", "print-identity-token", "--audiences", AUDIENCE,
             expect=1)
    assert own.stderr.startswith("ERROR: (keyless.auth.print-identity-token) No identity token can be obtained")


def test_sign_blob_and_sign_jwt_write_what_gcloud_writes(server: Server, tmp_path: Path) -> None:
    """000 (signBlob, signJwt): raw signature bytes, and the compact JWT, verified with the published keys."""
    caller = create_sa(server, "caller")
    priv = create_sa(server, "priv")
    grant(server, priv, f"serviceAccount:{caller}")
    caller_key = key_file(server, caller, tmp_path / "caller.json")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01 any bytes \xff")
    signature = tmp_path / "blob.sig"

    proc = kl(server, "iam", "service-accounts", "sign-blob", str(blob), str(signature), "--iam-account", priv,
              "--credential-file", str(caller_key))
    assert proc.stderr.strip() == f"signed blob [{blob}] as [{signature}] for [{priv}]"
    assert len(signature.read_bytes()) == 256
    verify_signature(server, priv, blob.read_bytes(), signature.read_bytes())

    claims = {"sub": "someone@example.com", "aud": AUDIENCE, "iat": 1700000000}
    jwt_out = kl(server, "iam", "service-accounts", "sign-jwt", "-", "-", "--iam-account", priv,
                 "--credential-file", str(caller_key), input=json.dumps(claims))
    token = jwt_out.stdout
    assert token.count(".") == 2 and "\n" not in token
    signed = verify_jwt(server, priv, token, verify_iat=False)
    assert isinstance(signed.pop("exp"), int)  # added (now + 1 h) when the claims have none, as Google does
    assert signed == claims

    # The owner has no Token Creator on priv: owners must grant it to themselves, as on Google.
    denied = kl(server, "iam", "service-accounts", "sign-blob", str(blob), str(tmp_path / "x"), "--iam-account",
                priv, expect=1)
    assert "PERMISSION_DENIED: Permission 'iam.serviceAccounts.signBlob' denied" in denied.stderr
    assert not (tmp_path / "x").exists()


def test_project_level_binding_lets_a_caller_impersonate_every_account(server: Server, tmp_path: Path) -> None:
    """001: roles/iam.serviceAccountTokenCreator on the project, granted and revoked with `projects`."""
    project = f"proj-{uid()}"
    created = kl(server, "projects", "create", project)
    assert created.stderr.strip() == f"Created project [{project}]."
    caller = create_sa(server, "caller", project)
    targets = [create_sa(server, "target", project) for _ in range(2)]
    caller_key = key_file(server, caller, tmp_path / "caller.json")

    added = kl(server, "projects", "add-iam-policy-binding", project, f"--member=serviceAccount:{caller}",
               f"--role={TOKEN_CREATOR}", "--format=json")
    assert added.stderr.strip() == f"Updated IAM policy for project [{project}]."
    assert {"members": [f"serviceAccount:{caller}"], "role": TOKEN_CREATOR} in json.loads(added.stdout)["bindings"]
    for target in targets:
        token = kl(server, "--credential-file", str(caller_key), "auth", "print-access-token",
                   "--impersonate-service-account", target).stdout.strip()
        assert tokeninfo(server, token).json()["email"] == target

    members = kl(server, "projects", "get-iam-policy", project, "--flatten=bindings[].members",
                 "--format=value(bindings.role,bindings.members)").stdout.splitlines()
    assert f"{TOKEN_CREATOR}\tserviceAccount:{caller}" in members
    assert "roles/owner\tuser:owner@keyless.local" in members

    kl(server, "projects", "remove-iam-policy-binding", project, f"--member=serviceAccount:{caller}",
       f"--role={TOKEN_CREATOR}")
    kl(server, "--credential-file", str(caller_key), "auth", "print-access-token",
       "--impersonate-service-account", targets[0], expect=1)


def test_delegation_chain_last_entry_is_the_target(server: Server, tmp_path: Path) -> None:
    """002: delegates=[B] — the caller needs Token Creator on B, and B on the target, as gcloud's A,B,C does."""
    caller = create_sa(server, "caller")
    middle = create_sa(server, "middle")
    target = create_sa(server, "target")
    caller_key = key_file(server, caller, tmp_path / "caller.json")
    grant(server, middle, f"serviceAccount:{caller}")
    chain = f"{middle},{target}"

    refused = kl(server, "auth", "print-access-token", f"--impersonate-service-account={chain}",
                 "--credential-file", str(caller_key), expect=1)
    assert refused.stderr.splitlines()[0] == WARNING.format(target)
    assert "Failed to impersonate" in refused.stderr

    grant(server, target, f"serviceAccount:{middle}")
    proc = kl(server, "auth", "print-access-token", f"--impersonate-service-account={chain}",
              "--credential-file", str(caller_key))
    assert tokeninfo(server, proc.stdout.strip()).json()["email"] == target
    # Without the delegate, the caller itself has no grant on the target.
    kl(server, "auth", "print-access-token", f"--impersonate-service-account={target}",
       "--credential-file", str(caller_key), expect=1)
    # The other order names middle as the target, through a target the caller cannot use.
    kl(server, "auth", "print-access-token", f"--impersonate-service-account={target},{middle}",
       "--credential-file", str(caller_key), expect=1)

    # API calls go through the chain too: the impersonated target reads its own description only if allowed.
    described = kl(server, "iam", "service-accounts", "describe", target, "--impersonate-service-account", chain,
                   "--credential-file", str(caller_key), expect=1)
    assert "PERMISSION_DENIED" in described.stderr and WARNING.format(target) in described.stderr


class KeylessSigner(google.auth.credentials.Signing):
    """google-cloud-storage's view of a signer: keyless's signBlob, with a token that may call it."""

    def __init__(self, server: Server, token: str, email: str) -> None:
        self.server, self.token, self.email = server, token, email

    def sign_bytes(self, message: bytes) -> bytes:
        r = requests.post(f"{self.server.url}/v1/projects/-/serviceAccounts/{self.email}:signBlob", timeout=30,
                          json={"payload": base64.b64encode(message).decode()},
                          headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code == 200, r.text
        return base64.b64decode(r.json()["signedBlob"])

    @property
    def signer_email(self) -> str:
        return self.email

    @property
    def signer(self) -> None:
        return None


def test_id_token_without_metadata_server_and_signed_url_without_private_key(server: Server,
                                                                            tmp_path: Path) -> None:
    """003: an ID token through generateIdToken, and a Cloud Storage signed URL through signBlob."""
    email = f"laptop-{uid()}@example.com"
    user = tmp_path / "user.json"
    kl(server, "users", "add", email, "--output", str(user))
    signer = create_sa(server, "signer")
    grant(server, signer, f"user:{email}")

    ident = kl(server, "--credential-file", str(user), "auth", "print-identity-token",
               "--impersonate-service-account", signer, "--audiences", AUDIENCE)
    claims = b64url_json(ident.stdout.split(".")[1])
    assert claims["aud"] == AUDIENCE and "email" not in claims

    out = kl(server, "--credential-file", str(user), "storage", "sign-url", "gs://my-bucket/my path/file.txt",
             "--duration", "1h", "--impersonate-service-account", signer, "--format=json")
    assert out.stderr.strip() == WARNING.format(signer)
    [row] = json.loads(out.stdout)
    assert row["http_verb"] == "GET" and row["resource"] == "gs://my-bucket/my path/file.txt"
    url = row["signed_url"]
    assert url.startswith("https://storage.googleapis.com/my-bucket/my%20path/file.txt?")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert params["X-Goog-Expires"] == "3600"
    assert params["X-Goog-Credential"].startswith(f"{signer}/")

    # The same request signed by google-cloud-storage's own V4 code gives the very same URL.
    token = kl(server, "--credential-file", str(user), "auth", "print-access-token").stdout.strip()
    expected = generate_signed_url_v4(KeylessSigner(server, token, signer), "/my-bucket/my%20path/file.txt",
                                      dt.timedelta(hours=1), _request_timestamp=params["X-Goog-Date"])
    assert url == expected
    certs = requests.get(f"{server.url}/service_accounts/v1/metadata/x509/{signer}", timeout=30).json()
    assert verify_signed_url(url, certs) == signer

    # A key file as the active credential signs locally, with the same algorithm.
    key = key_file(server, signer, tmp_path / "signer.json")
    local = kl(server, "--credential-file", str(key), "storage", "sign-url", "gs://b/o", "-d", "90s",
               "--http-verb", "put", "--format=value(signed_url)").stdout.strip()
    key_certs = requests.get(f"{server.url}/service_accounts/v1/metadata/x509/{signer}", timeout=30).json()
    assert verify_signed_url(local, key_certs, method="PUT") == signer
    no_signer = kl(server, "--credential-file", str(user), "storage", "sign-url", "gs://b/o", expect=2)
    assert "needs a service account" in no_signer.stderr


def test_twelve_hour_tokens_need_the_lifetime_extension_constraint(server: Server, tmp_path: Path) -> None:
    """000 (REST): lifetime above 1 h is refused until the org-policy constraint lists the account."""
    project = f"life-{uid()}"
    kl(server, "projects", "create", project)
    priv = create_sa(server, "priv", project)
    kl(server, "iam", "service-accounts", "add-iam-policy-binding", priv, "--member=user:owner@keyless.local",
       f"--role={TOKEN_CREATOR}")

    refused = kl(server, "auth", "print-access-token", "--impersonate-service-account", priv, "--lifetime", "12h",
                 expect=1)
    assert "INVALID_ARGUMENT: Lifetime 43200s exceeds the maximum of 3600s" in refused.stderr
    allowed = kl(server, "resource-manager", "org-policies", "allow",
                 "iam.allowServiceAccountCredentialLifetimeExtension", priv, "--project", project, "--format=json")
    assert json.loads(allowed.stdout)["spec"]["rules"] == [{"values": {"allowedValues": [priv]}}]
    token = kl(server, "auth", "print-access-token", "--impersonate-service-account", priv,
               "--lifetime=43200").stdout.strip()
    assert int(tokeninfo(server, token).json()["expires_in"]) > 12 * 3600 - 60
    kl(server, "resource-manager", "org-policies", "delete", "iam.allowServiceAccountCredentialLifetimeExtension",
       "--project", project)
    kl(server, "auth", "print-access-token", "--impersonate-service-account", priv, "--lifetime", "12h", expect=1)
