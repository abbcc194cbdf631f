"""Helpers for tests that drive the real `keyless` command (a subprocess) against a real server."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.conftest import Server

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
WARNING = ("WARNING: This command is using service account impersonation. All API calls will be executed as "
           "[{}].")


def uid() -> str:
    return secrets.token_hex(3)


def kl(server: Server, *args: str, expect: int = 0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `keyless ARGS` against ``server``; assert its exit code."""
    proc = server.cli(*args, check=False, input=input)
    assert proc.returncode == expect, (f"keyless {' '.join(args)}: exit {proc.returncode}, expected {expect}\n"
                                       f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def create_sa(server: Server, prefix: str, project: str = "keyless-dev") -> str:
    """`keyless iam service-accounts create`, returning the email from --format=value(email)."""
    name = f"{prefix}-{uid()}"
    proc = kl(server, "iam", "service-accounts", "create", name, "--project", project, "--format=value(email)")
    assert proc.stderr.strip() == f"Created service account [{name}]."
    email = proc.stdout.strip()
    assert email == f"{name}@{project}.iam.gserviceaccount.com"
    return email


def grant(server: Server, target: str, member: str, role: str = TOKEN_CREATOR) -> dict[str, Any]:
    proc = kl(server, "iam", "service-accounts", "add-iam-policy-binding", target, f"--member={member}",
              f"--role={role}", "--format=json")
    assert proc.stderr.strip() == f"Updated IAM policy for serviceAccount [{target}]."
    return dict(json.loads(proc.stdout))


def key_file(server: Server, email: str, dest: Path) -> Path:
    proc = kl(server, "iam", "service-accounts", "keys", "create", str(dest), "--iam-account", email)
    assert proc.stderr.startswith("created key [") and proc.stderr.rstrip().endswith(f"as [{dest}] for [{email}]")
    return dest


def tokeninfo(server: Server, token: str) -> requests.Response:
    return requests.post(f"{server.url}/tokeninfo", data={"access_token": token}, timeout=30)


def certificates(server: Server, email: str) -> list[x509.Certificate]:
    r = requests.get(f"{server.url}/service_accounts/v1/metadata/x509/{email}", timeout=30)
    assert r.status_code == 200, r.text
    return [x509.load_pem_x509_certificate(pem.encode()) for pem in r.json().values()]


def verify_signature(server: Server, email: str, data: bytes, signature: bytes) -> None:
    """RSASSA-PKCS1-v1_5/SHA-256 with one of the account's published keys, or AssertionError."""
    for cert in certificates(server, email):
        try:
            cert.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
            return
        except Exception:
            continue
    raise AssertionError(f"signature does not verify with any key of {email}")


def verify_jwt(server: Server, email: str, token: str, **options: Any) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    r = requests.get(f"{server.url}/service_accounts/v1/metadata/x509/{email}", timeout=30)
    pem = r.json()[kid]
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    return dict(jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False, **options}))  # type: ignore[arg-type]


def b64url_json(segment: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))
