"""Helpers for the in-process HTTP tests: a TestClient that refuses 500s, an owner session, error-shape checks."""

from __future__ import annotations

import warnings
from typing import Any

import httpx

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns about httpx vs httpx2; irrelevant here
    from starlette.testclient import TestClient

from keyless.http.app import build_app

BASE = "http://testserver"
PROJECT = "keyless-dev"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


class NoServerErrors(TestClient):
    """A TestClient on which any 5xx answer fails the test at once, naming the request."""

    def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        response = super().request(method, url, **kwargs)
        assert response.status_code < 500, (
            f"{method} {url} answered {response.status_code}: {response.text[:2000]}")
        return response


def assert_google_error(response: httpx.Response, code: int, status: str) -> dict[str, Any]:
    """Google's error shape: ``{"error": {"code", "message", "status", ...}}`` with matching HTTP status."""
    assert response.status_code == code, f"expected {code}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert error["code"] == code, body
    assert error["status"] == status, body
    assert isinstance(error["message"], str) and error["message"], body
    return error


def assert_oauth_error(response: httpx.Response, code: int, error: str) -> dict[str, Any]:
    """The OAuth 2.0 error shape of the token endpoint: ``{"error": str, "error_description": str}``."""
    assert response.status_code == code, f"expected {code}, got {response.status_code}: {response.text}"
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("error") == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"], body
    return body


class Api:
    """The in-process app plus an owner session whose token is refreshed when the frozen clock passes it."""

    def __init__(self, inproc: Any) -> None:
        self.inproc = inproc
        self.clock = inproc.clock
        self.client = NoServerErrors(build_app(inproc.keyless), base_url=BASE, raise_server_exceptions=False)
        self._owner_token: str | None = None
        self._owner_expiry = 0.0

    # ------------------------------------------------------------ tokens

    def refresh_token_grant(self, creds: dict[str, Any] | None = None, **extra: str) -> httpx.Response:
        creds = creds or self.inproc.owner
        return self.client.post("/token", data={
            "grant_type": "refresh_token", "client_id": creds["client_id"],
            "client_secret": creds["client_secret"], "refresh_token": creds["refresh_token"], **extra})

    @property
    def owner_token(self) -> str:
        if self._owner_token is None or self.clock.now() >= self._owner_expiry - 60:
            r = self.refresh_token_grant()
            assert r.status_code == 200, r.text
            self._owner_token = r.json()["access_token"]
            self._owner_expiry = self.clock.now() + r.json()["expires_in"]
        return self._owner_token

    # ------------------------------------------------------------ requests

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None,
             params: Any = None, headers: dict[str, str] | None = None, auth: bool = True) -> httpx.Response:
        hdrs = dict(headers or {})
        if auth:
            hdrs.setdefault("Authorization", f"Bearer {token or self.owner_token}")
        if raw is not None:
            hdrs.setdefault("Content-Type", "application/json")
            return self.client.request(method, path, content=raw, params=params, headers=hdrs)
        if body is None:
            return self.client.request(method, path, params=params, headers=hdrs)
        return self.client.request(method, path, json=body, params=params, headers=hdrs)

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        r = self.call(method, path, body, **kwargs)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    # ------------------------------------------------------------ fixtures of state

    def create_sa(self, account_id: str, display_name: str | None = None, project: str = PROJECT) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if display_name is not None:
            spec["displayName"] = display_name
        created: dict[str, Any] = self.ok("POST", f"/v1/projects/{project}/serviceAccounts",
                                          {"accountId": account_id, "serviceAccount": spec})
        return created

    def add_binding(self, resource_path: str, role: str, member: str, condition: dict[str, str] | None = None
                    ) -> dict[str, Any]:
        """Read-modify-write the policy at ``resource_path`` (``/v1/projects/P`` or an account path)."""
        policy = self.ok("POST", f"{resource_path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
        binding: dict[str, Any] = {"role": role, "members": [member]}
        if condition is not None:
            binding["condition"] = condition
            policy["version"] = 3
        policy.setdefault("bindings", []).append(binding)
        out: dict[str, Any] = self.ok("POST", f"{resource_path}:setIamPolicy", {"policy": policy})
        return out

    def grant_owner_token_creator(self, email: str) -> None:
        self.add_binding(f"/v1/projects/-/serviceAccounts/{email}", TOKEN_CREATOR,
                         f"user:{self.inproc.owner['account']}")

    def sa_token(self, email: str, **body: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.ok("POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                                      {"scope": [CLOUD], **body})
        return out
