"""PostgreSQL failing over under keyless (docs/operations.md, "Failover"): while no database accepts writes every
request is answered 503 UNAVAILABLE (Google's error shape; the OAuth shape on the OAuth endpoints) within the
database timeout, never a 500 nor a hang; keyless serves again by itself within 5 s of the standby's promotion;
and nothing acknowledged is lost: every policy write that got 200 and the audit entry of every credential handed
out are on the promoted standby."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from keyless.crypto.keys import MasterKey
from keyless.domain.policy import new_etag
from keyless.storage.postgres import OPERATION_TIMEOUT, QUERY_TIMEOUT
from tests.conftest import CLOUD, Server, start_server
from tests.pg import PostgresCluster, ReplicatedCluster

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
# docs/operations.md: a request meeting a database that does not answer is answered 503 after OPERATION_TIMEOUT,
# at worst OPERATION_TIMEOUT + QUERY_TIMEOUT; the margin is for this shared machine.
ANSWER_WITHIN = OPERATION_TIMEOUT + QUERY_TIMEOUT + 3
SERVES_AGAIN_WITHIN = 5.0  # seconds after the promotion


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _replica(root: Path, name: str, dsn: str, key: Path) -> Server:
    return start_server(root / name, "--database", dsn, "--audit-retention-days", "0", "--master-key-file", str(key),
                        "--proxy-port", "-1", "--metadata-port", "-1")


@pytest.fixture
def replicated() -> Iterator[ReplicatedCluster]:
    cluster = ReplicatedCluster().start()
    yield cluster
    cluster.stop()


@dataclass
class Answer:
    thread: str
    what: str
    status: int | None  # None: no answer within ANSWER_WITHIN, or no connection
    seconds: float
    body: Any


class Load:
    """Client threads, each alternating between the replicas: writers read-modify-write one account's policy,
    adding a member per write; minters ask for access tokens. Every answer is kept."""

    def __init__(self, replicas: list[Server], token: str, target: str, resources: list[str]) -> None:
        self.replicas = replicas
        self.token = token
        self.target = target
        self.answers: list[Answer] = []
        self.acknowledged: dict[str, list[str]] = {resource: [] for resource in resources}
        self.tokens: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(i, r), name=f"writer{i}")
                        for i, r in enumerate(resources)]
        self.threads += [threading.Thread(target=self._mint, name=f"minter{i}") for i in range(2)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(ANSWER_WITHIN + 5)

    def _call(self, replica: Server, what: str, path: str, body: Any) -> Answer:
        started = time.monotonic()
        try:
            r = requests.post(f"{replica.url}{path}", json=body, timeout=ANSWER_WITHIN,
                              headers={"Authorization": f"Bearer {self.token}"})
            answer = Answer(threading.current_thread().name, what, r.status_code, time.monotonic() - started,
                            r.json())
        except (requests.RequestException, ValueError) as exc:
            answer = Answer(threading.current_thread().name, what, None, time.monotonic() - started,
                            type(exc).__name__)
        self.answers.append(answer)
        if answer.status != 200:
            self.stop.wait(0.02)  # a client's pause before it retries
        return answer

    def _write(self, index: int, resource: str) -> None:
        replicas = itertools.cycle(self.replicas)
        path = f"/v1/projects/-/serviceAccounts/{resource}"
        for n in itertools.count():
            if self.stop.is_set():
                return
            got = self._call(next(replicas), "getIamPolicy", f"{path}:getIamPolicy", {})
            if got.status != 200:
                continue
            members = {m for binding in got.body.get("bindings", []) for m in binding["members"]}
            member = f"user:w{index}-{n}@example.com"
            policy = {"etag": got.body["etag"], "bindings": [{"role": TOKEN_CREATOR,
                                                               "members": sorted(members | {member})}]}
            if self._call(next(replicas), "setIamPolicy", f"{path}:setIamPolicy", {"policy": policy}).status == 200:
                self.acknowledged[resource].append(member)

    def _mint(self) -> None:
        replicas = itertools.cycle(self.replicas)
        while not self.stop.is_set():
            got = self._call(next(replicas), "generateAccessToken",
                             f"/v1/projects/-/serviceAccounts/{self.target}:generateAccessToken", {"scope": [CLOUD]})
            if got.status == 200:
                self.tokens.append(got.body["accessToken"])

    def acks(self) -> int:
        return min(len(members) for members in self.acknowledged.values())

    def every_thread_refused_since(self, mark: int) -> bool:
        refused = {a.thread for a in self.answers[mark:] if a.status == 503}
        return refused == {t.name for t in self.threads}


def _token_hash(master: MasterKey, access_token: str) -> str:
    """The audit entry's ``tokenHash`` of an access token (docs/security.md, "Which entry released this token?")."""
    body = access_token.removeprefix("ya29.").split(".")[0]
    token_id = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["j"]
    return hmac.new(master.audit_hash_key, token_id.encode(), hashlib.sha256).hexdigest()[:32]


def _is_unavailable(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("code") == 503 and error.get("status") == "UNAVAILABLE"


def test_failover_under_load_answers_503_then_serves_again_and_loses_nothing(replicated: ReplicatedCluster,
                                                                             tmp_path: Path) -> None:
    replicated.create_database("keyless")
    key = tmp_path / "shared-master.key"
    a = _replica(tmp_path, "a", replicated.dsn("keyless"), key)
    b = _replica(tmp_path, "b", replicated.dsn("keyless"), key)
    try:
        target = a.create_sa("minted")
        a.grant(target, "user:owner@keyless.local")
        resources = [a.create_sa(f"written-{i}") for i in range(2)]
        with Load([a, b], a.owner_token, target, resources) as load:
            _wait_for(lambda: load.acks() >= 5 and len(load.tokens) >= 10, 30, "the load got going")

            # The primary stops answering (its connections stay open, as when the network to it is cut): every
            # client is answered 503, within the timeout.
            mark = len(load.answers)
            replicated.stall_primary()
            _wait_for(lambda: load.every_thread_refused_since(mark), 3 * ANSWER_WITHIN, "503s while stalled")

            # ... then it is gone for good; the standby is still read-only: 503 at once.
            mark = len(load.answers)
            replicated.kill_primary()
            _wait_for(lambda: load.every_thread_refused_since(mark), 2 * ANSWER_WITHIN, "503s while no primary")
            acks_before, tokens_before = load.acks(), len(load.tokens)

            replicated.promote_standby()
            promoted = time.monotonic()
            for replica in (a, b):
                path = f"/v1/projects/-/serviceAccounts/{target}:generateAccessToken"
                while requests.post(f"{replica.url}{path}", json={"scope": [CLOUD]}, timeout=ANSWER_WITHIN,
                                    headers={"Authorization": f"Bearer {a.owner_token}"}).status_code != 200:
                    assert time.monotonic() - promoted < SERVES_AGAIN_WITHIN, f"{replica.url} is serving again"
            _wait_for(lambda: load.acks() >= acks_before + 5 and len(load.tokens) >= tokens_before + 10, 30,
                      "the load went on after the promotion")

        unanswered = [x for x in load.answers if x.status is None]
        assert unanswered == [], "every request was answered in time"
        assert {x.status for x in load.answers} == {200, 503}
        assert all(_is_unavailable(x.body) for x in load.answers if x.status == 503)

        # On the promoted standby: every acknowledged policy write, every handed-out credential's audit entry.
        port = replicated.standby_port
        stored = [json.loads(line) for line in replicated.sql(port, "SELECT body FROM policies", "keyless").splitlines()]
        members = {m for body in stored for binding in body.get("bindings", []) for m in binding["members"]}
        for resource, acknowledged in load.acknowledged.items():
            assert set(acknowledged) <= members, resource
        audited = {json.loads(line).get("response", {}).get("tokenHash") for line in replicated.sql(
            port, "SELECT body FROM audit_log WHERE method = 'GenerateAccessToken' AND NOT denied",
            "keyless").splitlines()}
        master = MasterKey.load_or_create(key)
        assert {_token_hash(master, t) for t in load.tokens} <= audited
        # ... and both replicas read them (no cache outlived the old primary).
        for replica, resource in itertools.product((a, b), resources):
            policy = replica.owner("POST", f"/v1/projects/-/serviceAccounts/{resource}:getIamPolicy")
            assert set(load.acknowledged[resource]) <= set(policy["bindings"][0]["members"])
    finally:
        a.stop()
        b.stop()


def test_a_cached_policy_does_not_outlive_the_primary(replicated: ReplicatedCluster, tmp_path: Path) -> None:
    """The old primary may die between a write and the change counter's increase that makes every replica drop
    its cache: the promoted standby then holds the change under the old counter. Here the write is made in SQL,
    without the increase, just before the primary dies."""
    replicated.create_database("keyless")
    server = _replica(tmp_path, "a", replicated.dsn("keyless"), tmp_path / "master.key")
    try:
        email = server.create_sa("cached-policy")
        server.grant(email, "user:before@example.com")
        path = f"/v1/projects/-/serviceAccounts/{email}:getIamPolicy"
        assert server.owner("POST", path)["bindings"][0]["members"] == ["user:before@example.com"]
        replicated.sql(replicated.primary_port, "UPDATE policies SET body = replace(body, 'user:before@', "
                       f"'user:after@'), etag = '{new_etag()}' WHERE strpos(body, 'user:before@') > 0", "keyless")
        # The replica still answers from its cache: the counter did not move.
        assert server.owner("POST", path)["bindings"][0]["members"] == ["user:before@example.com"]

        replicated.kill_primary()
        replicated.promote_standby()
        promoted = time.monotonic()
        while (r := requests.post(f"{server.url}{path}", timeout=ANSWER_WITHIN,
                                  headers={"Authorization": f"Bearer {server.owner_token}"})).status_code != 200:
            assert r.status_code == 503 and time.monotonic() - promoted < SERVES_AGAIN_WITHIN
        assert r.json()["bindings"][0]["members"] == ["user:after@example.com"]
    finally:
        server.stop()


def test_a_database_that_is_down_is_503_in_each_endpoint_shape(tmp_path: Path) -> None:
    cluster = PostgresCluster().start()
    try:
        server = start_server(tmp_path / "a", "--database", cluster.create_database("down"), "--audit-retention-days",
                              "0", "--proxy-port", "-1", "--metadata-port", "-1")
        try:
            email = server.create_sa("database-down")
            server.grant(email, "user:owner@keyless.local")
            account = f"/v1/projects/-/serviceAccounts/{email}"
            minted = server.owner("POST", f"{account}:generateAccessToken", {"scope": [CLOUD]})["accessToken"]
            owner = json.loads(server.owner_file.read_text())
            cluster.stop()

            auth = {"Authorization": f"Bearer {server.owner_token}"}
            google = [
                requests.post(f"{server.url}{account}:generateAccessToken", json={"scope": [CLOUD]}, headers=auth,
                              timeout=ANSWER_WITHIN),
                requests.post(f"{server.url}{account}:setIamPolicy", json={"policy": {}}, headers=auth,
                              timeout=ANSWER_WITHIN),
                requests.get(f"{server.url}{account}", headers=auth, timeout=ANSWER_WITHIN),
                requests.get(f"{server.url}/v1/auditLog", headers=auth, timeout=ANSWER_WITHIN),
            ]
            for r in google:
                assert r.status_code == 503 and _is_unavailable(r.json()), (r.request.url, r.text)
            oauth = [
                requests.post(f"{server.url}/token", timeout=ANSWER_WITHIN, data={
                    "grant_type": "refresh_token", "client_id": owner["client_id"],
                    "client_secret": owner["client_secret"], "refresh_token": owner["refresh_token"]}),
                requests.get(f"{server.url}/oauth2/v3/tokeninfo", params={"access_token": minted},
                             timeout=ANSWER_WITHIN),
                requests.post(f"{server.url}/revoke", data={"token": minted}, timeout=ANSWER_WITHIN),
            ]
            for r in oauth:
                assert r.status_code == 503, (r.request.url, r.text)
                assert r.json()["error"] == "temporarily_unavailable" and r.json()["error_description"]
            assert server.process.poll() is None
            assert "Traceback" not in (server.data_dir / "server.log").read_text()
        finally:
            server.stop()
    finally:
        cluster.stop()
