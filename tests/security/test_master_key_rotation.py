"""The master-key rotation procedure of docs/security.md, run as written on a real data dir.

The procedure's code block is taken from the page (after the ``<!-- master-key-rotation -->`` marker), so
the documentation cannot drift from what works.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from tests.conftest import CLOUD, REPO, start_server

MARKER = "<!-- master-key-rotation -->"


def rotation_script() -> str:
    page = (REPO / "docs" / "security.md").read_text()
    after = page[page.index(MARKER) + len(MARKER):]
    match = re.search(r"```python\n(.*?)\n\s*```", after, re.DOTALL)
    assert match, "docs/security.md: no python block after the rotation marker"
    return textwrap.dedent(match.group(1))


def test_documented_master_key_rotation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data)
    try:
        email = srv.create_sa("survives-rotation")
        srv.grant(email, "user:owner@keyless.local")
        key_file = srv.key_file(email, tmp_path / "key.json")
        before = srv.owner("POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken", {"scope": [CLOUD]})
        certs = requests.get(f"{srv.url}/oauth2/v1/certs", timeout=10).json()
        owner_token = srv.owner_token
    finally:
        srv.stop()

    old_key = data / "master.key"
    new_key = tmp_path / "master.key.new"
    new_key.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    os.chmod(new_key, 0o600)

    # As the page says: a server given the new key on the old database does not start.
    (data / "endpoints.json").unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="exited early"):
        start_server(data, "--master-key-file", str(new_key))

    script = tmp_path / "rotate.py"
    script.write_text(rotation_script())
    done = subprocess.run([sys.executable, str(script), str(data / "keyless.db"), str(old_key), str(new_key)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted" in done.stdout
    os.replace(new_key, old_key)

    (data / "endpoints.json").unlink(missing_ok=True)
    srv = start_server(data)
    try:
        # The owner's credential decrypted (the server wrote owner.json) and works.
        fresh_owner = srv.user_token(srv.owner_file)
        # Tokens of the old key no longer verify.
        r = requests.get(f"{srv.url}/v1/projects/keyless-dev/serviceAccounts", timeout=10,
                         headers={"Authorization": f"Bearer {owner_token}"})
        assert r.status_code == 401, r.text
        r = requests.get(f"{srv.url}/tokeninfo", params={"access_token": before["accessToken"]}, timeout=10)
        assert r.status_code == 400, r.text
        # The service account's key file still works, and the re-encrypted keys still sign.
        info = json.loads(key_file.read_text())
        info["token_uri"] = f"{srv.url}/token"  # the restarted server listens on another port
        creds = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD])
        creds.refresh(Request())
        assert creds.token
        auth = {"Authorization": f"Bearer {fresh_owner}"}
        signed = requests.post(f"{srv.url}/v1/projects/-/serviceAccounts/{email}:signBlob",
                               json={"payload": "aGVsbG8="}, headers=auth, timeout=10)
        assert signed.status_code == 200, signed.text
        id_token = requests.post(f"{srv.url}/v1/projects/-/serviceAccounts/{email}:generateIdToken",
                                 json={"audience": "https://x.example"}, headers=auth, timeout=10)
        assert id_token.status_code == 200, id_token.text
        assert requests.get(f"{srv.url}/oauth2/v1/certs", timeout=10).json() == certs
        described = requests.get(f"{srv.url}/tokeninfo", params={"id_token": id_token.json()["token"]}, timeout=10)
        assert described.status_code == 200, described.text
        assert described.json()["aud"] == "https://x.example"
    finally:
        srv.stop()
