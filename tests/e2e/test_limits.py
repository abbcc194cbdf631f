"""Input limits and rate limits are enforced with Google-shaped errors; the access log redacts secrets."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import CLOUD, Server, start_server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("limited") / "data", "--access-log", "--max-body-bytes", "2048",
                       "--max-path-bytes", "300", "--max-header-bytes", "4096", "--max-scopes", "3",
                       "--max-delegates", "2", "--max-sign-blob-bytes", "100", "--max-sign-jwt-bytes", "200",
                       "--rate-limit-per-account", "5")
    yield srv
    srv.stop()


def _post(srv: Server, path: str, body: object, **headers: str) -> requests.Response:
    return requests.post(f"{srv.url}{path}", data=json.dumps(body), timeout=10,
                         headers={"Authorization": f"Bearer {srv.owner_token}", "Content-Type": "application/json",
                                  **headers})


def _error(r: requests.Response, code: int, status: str, text: str) -> None:
    assert r.status_code == code, r.text
    err = r.json()["error"]
    assert err["status"] == status and text in err["message"], err


def test_size_limits(limited: Server) -> None:
    sa = limited.create_sa()
    limited.grant(sa, "user:owner@keyless.local")
    base = f"/v1/projects/-/serviceAccounts/{sa}"
    _error(_post(limited, f"{base}:signJwt", {"payload": "x" * 5000}), 413, "INVALID_ARGUMENT", "2048 bytes")
    _error(_post(limited, f"{base}:signBlob", {"payload": base64.b64encode(b"x" * 101).decode()}), 400,
           "INVALID_ARGUMENT", "100 bytes")
    _error(_post(limited, f"{base}:signJwt", {"payload": json.dumps({"a": "x" * 250})}), 400, "INVALID_ARGUMENT",
           "200 bytes")
    _error(_post(limited, f"{base}:generateAccessToken", {"scope": [f"s{i}" for i in range(4)]}), 400,
           "INVALID_ARGUMENT", "at most 3")
    delegates = [f"projects/-/serviceAccounts/d{i}@keyless-dev.iam.gserviceaccount.com" for i in range(3)]
    _error(_post(limited, f"{base}:generateAccessToken", {"scope": [CLOUD], "delegates": delegates}), 400,
           "INVALID_ARGUMENT", "at most 2")
    _error(requests.get(f"{limited.url}/oauth2/v1/certs?x={'a' * 400}", timeout=10), 414, "INVALID_ARGUMENT",
           "300 bytes")
    _error(requests.get(f"{limited.url}/oauth2/v1/certs", headers={"X-Big": "b" * 5000}, timeout=10), 431,
           "INVALID_ARGUMENT", "4096 bytes")


def test_rate_limit_per_account(limited: Server) -> None:
    sa = limited.create_sa()
    limited.grant(sa, "user:owner@keyless.local")
    responses = [_post(limited, f"/v1/projects/-/serviceAccounts/{sa}:generateAccessToken", {"scope": [CLOUD]})
                 for _ in range(15)]
    codes = [r.status_code for r in responses]
    assert codes[0] == 200 and 429 in codes, codes
    refused = responses[codes.index(429)]
    assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    # Another account has its own budget.
    other = limited.create_sa()
    limited.grant(other, "user:owner@keyless.local")
    assert _post(limited, f"/v1/projects/-/serviceAccounts/{other}:generateAccessToken",
                 {"scope": [CLOUD]}).status_code == 200


def test_access_log_redacts_tokens(limited: Server) -> None:
    token = limited.owner_token
    requests.get(f"{limited.url}/oauth2/v3/tokeninfo", params={"access_token": token}, timeout=10)
    log = Path(limited.data_dir / "server.log").read_text()
    assert "/oauth2/v3/tokeninfo?access_token=REDACTED" in log
    assert token not in log and token[5:40] not in log


def test_rate_limit_per_caller(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--rate-limit", "3")
    try:
        codes = [requests.get(f"{srv.url}/v1/projects/keyless-dev/serviceAccounts", timeout=10,
                              headers={"Authorization": f"Bearer {srv.owner_token}"}).status_code for _ in range(12)]
        assert codes[0] == 200 and 429 in codes, codes
    finally:
        srv.stop()
