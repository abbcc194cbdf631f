"""Two stateless replicas on one PostgreSQL behind a round-robin proxy: nothing is lost, every change is
enforced by both (by the other within the propagation bound), and setIamPolicy's etag race has exactly one winner."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import CLOUD, Server, start_server


class RoundRobin:
    """A TCP proxy on loopback that hands each new connection to the next live backend."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.down: set[int] = set()
        self._next = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.backends)):
            index = self._next % len(self.backends)
            self._next += 1
            if index in self.down:
                continue
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.backends[index])
            except OSError:
                self.down.add(index)  # a health check in miniature: a refused backend is taken out
                continue
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            return
        writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Cluster:
    a: Server
    b: Server
    lb: RoundRobin
    dsn: str
    master_key: Path

    def token(self) -> str:
        return self.a.owner_token

    def call(self, base: str, method: str, path: str, body: Any = None, token: str | None = None) -> requests.Response:
        return requests.request(method, f"{base}{path}", json=body, timeout=30,
                                headers={"Authorization": f"Bearer {token or self.token()}"})


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _cluster(postgres: Any, tmp_path: Path, *extra: str) -> Iterator[Cluster]:
    dsn = postgres.create_database("replicas")
    key = tmp_path / "shared-master.key"
    args = ("--database", dsn, "--audit-retention-days", "0", "--master-key-file", str(key), "--proxy-port", "-1",
            "--metadata-port", "-1", *extra)
    a = start_server(tmp_path / "a", *args)
    b = start_server(tmp_path / "b", *args)
    lb = RoundRobin([_hostport(a.url), _hostport(b.url)])
    yield Cluster(a, b, lb, dsn, key)
    lb.close()
    a.stop()
    b.stop()


@pytest.fixture
def cluster(postgres: Any, tmp_path: Path) -> Iterator[Cluster]:
    yield from _cluster(postgres, tmp_path)


@pytest.fixture
def public_cluster(postgres: Any, tmp_path: Path) -> Iterator[Cluster]:
    """Replicas reached through a public URL: their sign-in page asks for passwords."""
    yield from _cluster(postgres, tmp_path, "--public-url", "https://keyless.example")


def test_replica_with_empty_data_dir_joins_same_owner_and_keys(cluster: Cluster) -> None:
    owner_a = json.loads(cluster.a.owner_file.read_text())
    owner_b = json.loads(cluster.b.owner_file.read_text())
    assert owner_a["refresh_token"] == owner_b["refresh_token"]
    assert not (cluster.a.data_dir / "master.key").exists() and not (cluster.b.data_dir / "master.key").exists()
    certs = [requests.get(f"{s.url}/oauth2/v1/certs", timeout=10).json() for s in (cluster.a, cluster.b)]
    assert certs[0] == certs[1] and len(certs[0]) == 1


def test_tokens_minted_by_one_replica_verify_on_the_other(cluster: Cluster) -> None:
    email = cluster.a.create_sa("cross-replica")
    cluster.a.grant(email, "user:owner@keyless.local")
    minted = cluster.call(cluster.a.url, "POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                          {"scope": [CLOUD]})
    assert minted.status_code == 200
    info = requests.get(f"{cluster.b.url}/oauth2/v3/tokeninfo",
                        params={"access_token": minted.json()["accessToken"]}, timeout=10).json()
    assert info["email"] == email
    id_token = cluster.call(cluster.b.url, "POST", f"/v1/projects/-/serviceAccounts/{email}:generateIdToken",
                            {"audience": "https://x"}).json()["token"]
    assert requests.get(f"{cluster.a.url}/oauth2/v3/tokeninfo", params={"id_token": id_token},
                        timeout=10).json()["aud"] == "https://x"
    blob = cluster.call(cluster.a.url, "POST", f"/v1/projects/-/serviceAccounts/{email}:signBlob",
                        {"payload": base64.b64encode(b"x").decode()}).json()
    blob_b = cluster.call(cluster.b.url, "POST", f"/v1/projects/-/serviceAccounts/{email}:signBlob",
                          {"payload": base64.b64encode(b"x").decode()}).json()
    assert blob["keyId"] == blob_b["keyId"], "one system key per account across the cluster"


def test_concurrent_etag_race_has_exactly_one_winner(cluster: Cluster) -> None:
    email = cluster.a.create_sa("etag-race")
    path = f"/v1/projects/-/serviceAccounts/{email}"
    policy = cluster.call(cluster.lb.url, "POST", f"{path}:getIamPolicy").json()
    token = cluster.token()

    def write(i: int) -> int:
        body = {"policy": {"etag": policy["etag"], "bindings": [
            {"role": "roles/iam.serviceAccountTokenCreator", "members": [f"user:writer{i}@example.com"]}]}}
        return cluster.call(cluster.lb.url, "POST", f"{path}:setIamPolicy", body, token).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(write, range(16)))
    assert codes.count(200) == 1 and codes.count(409) == 15, codes
    final = cluster.call(cluster.b.url, "POST", f"{path}:getIamPolicy").json()
    winner = codes.index(200)
    assert final["bindings"][0]["members"] == [f"user:writer{winner}@example.com"]


def _within_bound(answer: Any, status: int, bound: float = 1.0) -> None:
    """``answer()`` returns ``status`` within the propagation bound (docs/operations.md): polled, with a deadline."""
    deadline = time.monotonic() + bound
    while (got := answer().status_code) != status:
        assert time.monotonic() < deadline, f"{status} within {bound} s (last {got})"


def test_disable_on_one_replica_denies_on_the_other_within_the_bound(cluster: Cluster) -> None:
    email = cluster.a.create_sa("disable-me")
    cluster.a.grant(email, "user:owner@keyless.local")
    path = f"/v1/projects/-/serviceAccounts/{email}"
    token = cluster.call(cluster.b.url, "POST", f"{path}:generateAccessToken", {"scope": [CLOUD]}).json()["accessToken"]
    assert cluster.call(cluster.a.url, "POST", f"{path}:disable", {}).status_code == 200
    # At once on A; on B within the bound (it learns of the change through LISTEN/NOTIFY: tests/replicas/
    # test_propagation.py measures it for every kind of revocation).
    assert cluster.call(cluster.a.url, "POST", f"{path}:generateAccessToken", {"scope": [CLOUD]}).status_code == 400
    _within_bound(lambda: cluster.call(cluster.b.url, "POST", f"{path}:generateAccessToken", {"scope": [CLOUD]}), 400)
    assert requests.get(f"{cluster.b.url}/oauth2/v3/tokeninfo", params={"access_token": token},
                        timeout=10).status_code == 400
    cluster.a.revoke_all(email, "user:owner@keyless.local")
    assert cluster.call(cluster.a.url, "POST", f"{path}:enable", {}).status_code == 200
    _within_bound(lambda: cluster.call(cluster.b.url, "POST", f"{path}:generateAccessToken", {"scope": [CLOUD]}), 403)


def test_killing_a_replica_mid_load_loses_no_committed_write(cluster: Cluster) -> None:
    token = cluster.token()
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        i = 0
        while not stop.is_set() and i < 200:
            account_id = f"load-{worker}-{i}-{secrets.token_hex(2)}"
            try:
                r = cluster.call(cluster.lb.url, "POST", "/v1/projects/keyless-dev/serviceAccounts",
                                 {"accountId": account_id}, token)
            except requests.RequestException:
                i += 1
                continue
            if r.status_code == 200:
                acknowledged.append(r.json()["email"])
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < 20:
        if not any(t.is_alive() for t in threads):
            break
        threading.Event().wait(0.01)
    cluster.a.process.send_signal(signal.SIGKILL)
    cluster.a.process.wait(10)
    count_at_kill = len(acknowledged)
    while len(acknowledged) < count_at_kill + 20 and any(t.is_alive() for t in threads):
        threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join(60)
    assert len(acknowledged) >= count_at_kill + 20, "the surviving replica kept serving"
    for email in acknowledged:
        r = cluster.call(cluster.b.url, "GET", f"/v1/projects/keyless-dev/serviceAccounts/{email}", token=token)
        assert r.status_code == 200, email


def test_time_travel_is_refused_with_postgresql(cluster: Cluster, tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import KEYLESS

    proc = subprocess.run([*KEYLESS, "serve", "--port", "0", "--data-dir", str(tmp_path / "tt"), "--database",
                           cluster.dsn, "--audit-retention-days", "0", "--allow-time-travel"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "--allow-time-travel" in proc.stderr


def test_a_code_signed_in_on_one_replica_is_redeemed_once_on_either(cluster: Cluster) -> None:
    """gcloud auth login's code is stored where every replica finds it, and taken once across the cluster: a
    second presentation on the other replica is refused and revokes, on both, what the first exchange gave."""
    import html
    import re
    from urllib.parse import parse_qs, urlsplit

    from keyless.domain.oauth_clients import GCLOUD_CLIENT_ID, GCLOUD_CLIENT_SECRET, s256_challenge

    def sign_in() -> dict[str, str]:
        """The page on replica a; the form of the token exchange of the code it gives."""
        verifier = secrets.token_urlsafe(48)
        browser = requests.Session()
        page = browser.get(f"{cluster.a.url}/o/oauth2/auth", timeout=10, params={
            "response_type": "code", "client_id": GCLOUD_CLIENT_ID, "redirect_uri": "http://localhost:8085/",
            "scope": f"openid {CLOUD}", "state": "s", "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256", "access_type": "offline"})
        form = {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                                                           page.text)}
        signed_in = browser.post(f"{cluster.a.url}/o/oauth2/auth", data={**form, "email": "owner@keyless.local"},
                                 allow_redirects=False, timeout=30)
        assert signed_in.status_code == 303, signed_in.text
        code = parse_qs(urlsplit(signed_in.headers["location"]).query)["code"][0]
        return {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost:8085/",
                "client_id": GCLOUD_CLIENT_ID, "client_secret": GCLOUD_CLIENT_SECRET, "code_verifier": verifier}

    def refresh(base: str, refresh_token: str) -> requests.Response:
        return requests.post(f"{base}/token", timeout=30, data={
            "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": GCLOUD_CLIENT_ID,
            "client_secret": GCLOUD_CLIENT_SECRET})

    exchange = sign_in()
    first = requests.post(f"{cluster.b.url}/token", data=exchange, timeout=30)
    assert first.status_code == 200, first.text
    assert refresh(cluster.a.url, first.json()["refresh_token"]).status_code == 200
    assert requests.post(f"{cluster.a.url}/token", data=exchange, timeout=30).json()["error"] == "invalid_grant"
    for base in (cluster.a.url, cluster.b.url):
        assert refresh(base, first.json()["refresh_token"]).json()["error"] == "invalid_grant"
        assert requests.get(f"{base}/tokeninfo", params={"access_token": first.json()["access_token"]},
                            timeout=10).status_code == 400
    # A refresh token revoked on one replica is refused by the other.
    second = requests.post(f"{cluster.a.url}/token", data=sign_in(), timeout=30)
    assert second.status_code == 200, second.text
    assert refresh(cluster.b.url, second.json()["refresh_token"]).status_code == 200
    assert requests.post(f"{cluster.b.url}/revoke", data={"token": second.json()["refresh_token"]}, timeout=30).ok
    assert refresh(cluster.a.url, second.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_password_guesses_are_counted_once_for_the_whole_cluster(public_cluster: Cluster) -> None:
    """The sign-in page's failed passwords are counted per user in the database: two replicas give an attacker
    no more guesses than one (the per-address count stays each replica's own)."""
    import html
    import re

    from keyless.domain.oauth_clients import GCLOUD_CLIENT_ID, s256_challenge
    from keyless.service.signin import FAILED_SIGN_IN_BURST

    cluster = public_cluster
    email, password = "alice@example.com", "correct horse battery staple"
    assert cluster.call(cluster.a.url, "POST", "/keyless/v1/users", {"email": email}).status_code == 200
    assert cluster.call(cluster.b.url, "POST", f"/keyless/v1/users/{email}:setPassword",
                        {"password": password}).status_code == 200

    def attempt(base: str, guess: str) -> int:
        browser = requests.Session()
        page = browser.get(f"{base}/o/oauth2/auth", timeout=10, params={
            "response_type": "code", "client_id": GCLOUD_CLIENT_ID, "redirect_uri": "http://localhost:8085/",
            "scope": CLOUD, "code_challenge": s256_challenge(secrets.token_urlsafe(48)),
            "code_challenge_method": "S256"})
        assert page.status_code == 200 and 'type="password"' in page.text, page.text
        form = {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                                                           page.text)}
        answer = browser.post(f"{base}/o/oauth2/auth", data={**form, "email": email, "password": guess},
                              allow_redirects=False, timeout=30)
        return answer.status_code

    replicas = (cluster.a.url, cluster.b.url)
    # Wrong guesses, alternating between the replicas: together they reach the one limit.
    guesses = [attempt(replicas[i % 2], "a wrong guess") for i in range(int(FAILED_SIGN_IN_BURST))]
    assert guesses == [401] * int(FAILED_SIGN_IN_BURST)
    # Past it, each replica refuses without looking at the password, the right one included.
    assert [attempt(base, "another guess") for base in replicas] == [429, 429]
    assert [attempt(base, password) for base in replicas] == [429, 429]
