"""A service account has at most 10 user-managed keys, also when the creates race: parallel ``keys.create``
and ``keys.upload`` requests against a real server (two worker processes sharing its SQLite database) add
exactly 10, and the others are refused with 400 FAILED_PRECONDITION. The store's conformance suite checks
the same of every backend (tests/storage/test_conformance.py)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from keyless.crypto.keys import generate_key_pair
from tests.conftest import Server, start_server

PARALLEL = 16
MAX_KEYS = 10


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("key-quota") / "data", "--workers", "2")
    yield srv
    srv.stop()


def _post(server: Server, path: str, body: dict[str, Any]) -> requests.Response:
    # A connection per request, so that the kernel spreads them over both workers.
    with requests.Session() as session:
        return session.post(f"{server.url}{path}", json=body, timeout=120,
                            headers={"Authorization": f"Bearer {server.owner_token}", "Connection": "close"})


def _user_keys(server: Server, email: str) -> list[dict[str, Any]]:
    listed = server.owner("GET", f"/v1/projects/-/serviceAccounts/{email}/keys?keyTypes=USER_MANAGED")
    return list(listed.get("keys", []))


def _race(server: Server, email: str, bodies: list[tuple[str, dict[str, Any]]]) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda item: _post(server, *item), bodies))


def _assert_exactly_ten(server: Server, email: str, responses: list[requests.Response]) -> None:
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * MAX_KEYS + [400] * (PARALLEL - MAX_KEYS), [(r.status_code, r.text[:200])
                                                                       for r in responses]
    for refused in (r for r in responses if r.status_code == 400):
        assert refused.json()["error"]["status"] == "FAILED_PRECONDITION", refused.text
    assert len(_user_keys(server, email)) == MAX_KEYS


def test_parallel_key_creates_stop_at_ten(two_workers: Server) -> None:
    email = two_workers.create_sa()
    path = f"/v1/projects/-/serviceAccounts/{email}/keys"
    _assert_exactly_ten(two_workers, email, _race(two_workers, email, [(path, {})] * PARALLEL))


def test_parallel_key_uploads_stop_at_ten(two_workers: Server) -> None:
    email = two_workers.create_sa()
    path = f"/v1/projects/-/serviceAccounts/{email}/keys:upload"
    import time

    certs = [generate_key_pair("uploaded", time.time() - 60).certificate_pem for _ in range(PARALLEL)]
    bodies = [(path, {"publicKeyData": base64.b64encode(pem).decode()}) for pem in certs]
    _assert_exactly_ten(two_workers, email, _race(two_workers, email, bodies))


def test_a_deleted_key_frees_its_place(two_workers: Server, tmp_path: Path) -> None:
    email = two_workers.create_sa()
    path = f"/v1/projects/-/serviceAccounts/{email}/keys"
    _race(two_workers, email, [(path, {})] * PARALLEL)
    keys = _user_keys(two_workers, email)
    assert len(keys) == MAX_KEYS
    two_workers.owner("DELETE", f"/v1/{keys[0]['name']}")
    assert _post(two_workers, path, {}).status_code == 200
    assert _post(two_workers, path, {}).status_code == 400
