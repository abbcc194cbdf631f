"""The server starts, bootstraps its owner, and the owner can act."""

from __future__ import annotations

import json
import stat

import requests

from tests.conftest import Server


def test_serve_initialises_data_dir(server: Server) -> None:
    owner = json.loads(server.owner_file.read_text())
    assert owner["type"] == "authorized_user"
    assert owner["token_uri"] == f"{server.url}/token"
    assert owner["quota_project_id"] == "keyless-dev"
    assert stat.S_IMODE(server.owner_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((server.data_dir / "master.key").stat().st_mode) == 0o600
    endpoints = json.loads((server.data_dir / "endpoints.json").read_text())
    assert endpoints["api"] == server.url


def test_owner_has_roles_owner(server: Server) -> None:
    policy = server.owner("POST", "/v1/projects/keyless-dev:getIamPolicy", {})
    assert {"role": "roles/owner", "members": ["user:owner@keyless.local"]} in policy["bindings"]


def test_unknown_path_is_google_shaped_404(server: Server) -> None:
    r = requests.get(f"{server.url}/nope", timeout=5)
    assert r.status_code == 404
    assert r.json()["error"]["status"] == "NOT_FOUND"
