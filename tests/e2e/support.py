"""Small helpers shared by the end-to-end tests that drive google-auth and requests against a real server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
from pathlib import Path
from typing import Any

import requests
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from tests.conftest import CLOUD, Server

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
EXPIRE_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def sa_credentials(key_path: Path, scopes: list[str] | None = None) -> service_account.Credentials:
    """google-auth credentials from a key file written by keys.create (its token_uri is the server's)."""
    return service_account.Credentials.from_service_account_file(str(key_path), scopes=scopes or [CLOUD])


def sa_token(server: Server, email: str, tmp_path: Path) -> str:
    """An access token for ``email`` obtained the way applications do: key file + google-auth refresh."""
    creds = sa_credentials(server.key_file(email, tmp_path / f"key-{secrets.token_hex(4)}.json"))
    creds.refresh(Request())
    assert creds.token
    return str(creds.token)


def iamcredentials(server: Server, token: str, target: str, verb: str, body: dict[str, Any]) -> requests.Response:
    """POST an IAM Credentials RPC for ``target`` through ``projects/-/``."""
    return requests.post(f"{server.url}/v1/projects/-/serviceAccounts/{target}:{verb}", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})


def mint(server: Server, token: str, target: str, **body: Any) -> requests.Response:
    body.setdefault("scope", [CLOUD])
    return iamcredentials(server, token, target, "generateAccessToken", body)


def probe(server: Server, token: str, resource_email: str) -> requests.Response:
    """An authenticated API call whose outcome depends only on the bearer token being valid."""
    return requests.post(f"{server.url}/v1/projects/-/serviceAccounts/{resource_email}:testIamPermissions",
                         json={"permissions": ["iam.serviceAccounts.getAccessToken"]}, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})


def google_error(r: requests.Response, code: int, status: str) -> dict[str, Any]:
    """Assert a Google-shaped JSON error with this code and status; return its ``error`` object."""
    assert r.status_code == code, f"expected {code} {status}, got {r.status_code}: {r.text}"
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["status"] == status, err
    return dict(err)


def parse_expire_time(value: str) -> float:
    assert EXPIRE_TIME_RE.match(value), value
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def server_now(server: Server, token: str, target: str) -> float:
    """The server's clock, read from a freshly minted token's expireTime minus the lifetime asked for."""
    r = mint(server, token, target, lifetime="600s")
    assert r.status_code == 200, r.text
    return parse_expire_time(r.json()["expireTime"]) - 600


def b64url_json(segment: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def jwt_header(token: str) -> dict[str, Any]:
    return b64url_json(token.split(".")[0])


def jwt_claims(token: str) -> dict[str, Any]:
    return b64url_json(token.split(".")[1])


def unique_id(server: Server, email: str) -> str:
    return str(server.owner("GET", f"/v1/projects/-/serviceAccounts/{email}")["uniqueId"])
