"""Install without cloning: the built wheel, in a fresh virtual environment outside the checkout, gives a
working ``keyless`` that serves and mints a token with nothing read from the source tree."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from keyless import __version__
from keyless.pytest_plugin import stop_process
from tests.conftest import REPO


def test_the_wheel_installs_and_serves_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                   check=True, timeout=600, cwd=tmp_path)
    wheel = next(dist.glob("keyless-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(wheel)], check=True, timeout=900, cwd=tmp_path)
    keyless = str(venv / "bin" / "keyless")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # nothing of the checkout's
    version = subprocess.run([keyless, "--version"], capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=60)
    assert version.stdout.strip() == f"keyless {__version__}"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import keyless; print(keyless.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60).stdout
    assert where.startswith(str(venv)), where

    data = tmp_path / "app" / ".keyless"
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([keyless, "serve", "--port", "0", "--data-dir", str(data)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (data / "endpoints.json").exists():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "keyless serve did not become ready"
            time.sleep(0.05)
        url = json.loads((data / "endpoints.json").read_text())["api"]
        created = subprocess.run([keyless, "iam", "service-accounts", "create", "installed-sa", "--format", "json"],
                                 capture_output=True, text=True, env=env, cwd=tmp_path / "app", timeout=60)
        assert created.returncode == 0, created.stderr
        email = json.loads(created.stdout)["email"]
        owner = json.loads((data / "owner.json").read_text())
        token = requests.post(f"{url}/token", data={
            "grant_type": "refresh_token", "client_id": owner["client_id"], "client_secret": owner["client_secret"],
            "refresh_token": owner["refresh_token"]}, timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        path = f"{url}/v1/projects/-/serviceAccounts/{email}"
        policy = requests.post(f"{path}:getIamPolicy", headers=headers, timeout=30).json()
        policy["bindings"] = [{"role": "roles/iam.serviceAccountTokenCreator", "members": ["user:owner@keyless.local"]}]
        assert requests.post(f"{path}:setIamPolicy", json={"policy": policy}, headers=headers,
                             timeout=30).status_code == 200
        minted = requests.post(f"{path}:generateAccessToken", headers=headers, timeout=30,
                               json={"scope": ["https://www.googleapis.com/auth/cloud-platform"]})
        assert minted.status_code == 200, minted.text
        assert minted.json()["accessToken"].startswith("ya29.")
    finally:
        stop_process(proc)
        log.close()
