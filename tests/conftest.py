"""Shared fixtures: an in-process keyless on a frozen clock, and real servers started as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from keyless.clock import FrozenClock
from keyless.crypto.keys import MasterKey
from keyless.pytest_plugin import stop_process
from keyless.service.app import Keyless
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
from keyless.storage.cache import CachingStore
from keyless.storage.sqlite import SqliteStore

REPO = Path(__file__).resolve().parent.parent
KEYLESS = [sys.executable, "-m", "keyless"]
CLOUD = "https://www.googleapis.com/auth/cloud-platform"


# ---------------------------------------------------------------- in-process


@dataclass
class InProcess:
    """A keyless built in this process on a FrozenClock; ``call`` runs a coroutine to completion."""

    keyless: Keyless
    clock: FrozenClock
    owner: dict[str, Any]
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[InProcess]:
    loop = asyncio.new_event_loop()
    clock = FrozenClock(time.time())
    # As `keyless serve` opens it: the read cache (and its decision memo) in front of SQLite.
    store = CachingStore(SqliteStore(tmp_path / "keyless.db"))
    loop.run_until_complete(store.open())
    kl = Keyless(store, clock, Settings(public_url="http://testserver"), MasterKey(secrets.token_bytes(32)))
    boot = loop.run_until_complete(bootstrap(kl, tmp_path))
    owner = json.loads(boot.owner_file.read_text())
    yield InProcess(kl, clock, owner, loop)
    loop.run_until_complete(store.close())
    loop.close()


# ---------------------------------------------------------------- real server


@dataclass
class Server:
    """A real ``keyless serve`` on a free loopback port, with helpers that act as its owner."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    owner_file: Path
    project: str = "keyless-dev"
    verify: str | bool = True  # what requests trusts: the CA bundle of a server whose API serves HTTPS
    _owner_token: str | None = field(default=None, repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["KEYLESS_DATA_DIR"] = str(self.data_dir)
        env.update(extra)
        return env

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*KEYLESS, *args], capture_output=True, text=True, env=self.env(), input=input,
                              timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"keyless {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def user_token(self, credential_file: Path) -> str:
        info = json.loads(credential_file.read_text())
        r = requests.post(f"{self.url}/token", data={
            "grant_type": "refresh_token", "client_id": info["client_id"], "client_secret": info["client_secret"],
            "refresh_token": info["refresh_token"]}, timeout=10, verify=self.verify)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    @property
    def owner_token(self) -> str:
        if self._owner_token is None:
            self._owner_token = self.user_token(self.owner_file)
        return self._owner_token

    def owner(self, method: str, path: str, body: Any = None, expect: int | None = 200) -> Any:
        r = requests.request(method, f"{self.url}{path}", json=body, timeout=30, verify=self.verify,
                             headers={"Authorization": f"Bearer {self.owner_token}"})
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def create_sa(self, account_id: str | None = None, project: str | None = None) -> str:
        account_id = account_id or f"sa-{secrets.token_hex(4)}"
        body = self.owner("POST", f"/v1/projects/{project or self.project}/serviceAccounts",
                          {"accountId": account_id, "serviceAccount": {"displayName": account_id}})
        return str(body["email"])

    def key_file(self, email: str, dest: Path) -> Path:
        import base64

        created = self.owner("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
        dest.write_bytes(base64.b64decode(created["privateKeyData"]))
        return dest

    def grant(self, email: str, member: str, role: str = "roles/iam.serviceAccountTokenCreator",
              condition: dict[str, str] | None = None) -> dict[str, Any]:
        """Read-modify-write the account's policy, adding ``member`` to ``role``."""
        path = f"/v1/projects/-/serviceAccounts/{email}"
        policy = self.owner("POST", f"{path}:getIamPolicy?options.requestedPolicyVersion=3")
        binding: dict[str, Any] = {"role": role, "members": [member]}
        if condition:
            binding["condition"] = condition
            policy["version"] = 3
        policy.setdefault("bindings", []).append(binding)
        return dict(self.owner("POST", f"{path}:setIamPolicy", {"policy": policy}))

    def revoke_all(self, email: str, member: str) -> dict[str, Any]:
        path = f"/v1/projects/-/serviceAccounts/{email}"
        policy = self.owner("POST", f"{path}:getIamPolicy?options.requestedPolicyVersion=3")
        for b in policy.get("bindings", []):
            b["members"] = [m for m in b["members"] if m != member]
        return dict(self.owner("POST", f"{path}:setIamPolicy", {"policy": policy}))

    def stop(self) -> None:
        stop_process(self.process)


def start_server(data_dir: Path, *extra: str, timeout: float = 30.0) -> Server:
    """Start ``keyless serve`` and wait until it has written endpoints.json (its readiness signal)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoints = data_dir / "endpoints.json"
    log = open(data_dir / "server.log", "ab")
    proc = subprocess.Popen([*KEYLESS, "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not endpoints.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"keyless serve exited early: {(data_dir / 'server.log').read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("keyless serve did not become ready")
        time.sleep(0.02)
    url = json.loads(endpoints.read_text())["api"]
    return Server(url=url, data_dir=data_dir, process=proc, owner_file=data_dir / "owner.json")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("keyless-server"), "--allow-time-travel")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One throwaway PostgreSQL cluster for the whole run; tests create their own databases in it."""
    from tests.pg import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", "--allow-time-travel")
    yield srv
    srv.stop()
