"""kill -9 under load loses nothing that was acknowledged.

A real server on SQLite (WAL, synchronous=NORMAL) is killed with SIGKILL, five times, while client threads
read-modify-write service-account policies (``setIamPolicy`` with the etag) and mint access tokens
(``generateAccessToken``). Every acknowledged (200) policy write and every token a client received is noted.
After each restart on the same data dir:

* every acknowledged binding is in its policy (a process kill is not a power loss: a committed transaction
  is in the WAL, in the OS page cache, and must survive);
* every token a client received has its audit entry (a credential is released only once its entry is
  stored): the entry's ``tokenHash`` is recomputed from the token and the master key, and its
  ``expireTime`` is the one the client was given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import requests

from keyless.crypto.keys import MasterKey
from tests.conftest import CLOUD, Server, start_server

ROUNDS = 5
WRITERS = 3
MINTERS = 2
# Acknowledged operations of each kind to wait for in a round before the kill (the load keeps running).
PER_ROUND = 25
ROUND_TIMEOUT = 60.0
ROLE = "roles/iam.serviceAccountUser"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


@dataclass
class Ledger:
    """What clients were told: acknowledged bindings and received tokens (with the expireTime given)."""

    bindings: list[tuple[str, str]] = field(default_factory=list)
    tokens: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def ack_binding(self, email: str, member: str) -> None:
        with self.lock:
            self.bindings.append((email, member))
            self.lock.notify_all()

    def ack_token(self, token: str, expire_time: str) -> None:
        with self.lock:
            self.tokens.append((token, expire_time))
            self.lock.notify_all()


def _session(token: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def _writer(url: str, token: str, email: str, tag: str, stop: threading.Event, ledger: Ledger) -> None:
    """Add one member after another to ``email``'s policy, read-modify-write with the etag."""
    s = _session(token)
    base = f"{url}/v1/projects/-/serviceAccounts/{email}"
    n = 0
    try:
        while not stop.is_set():
            r = s.post(f"{base}:getIamPolicy", json={}, timeout=10)
            if r.status_code != 200:
                ledger.unexpected.append(f"getIamPolicy {r.status_code}: {r.text[:200]}")
                return
            policy = r.json()
            member = f"user:{tag}-{n}@example.com"
            bindings = policy.setdefault("bindings", [])
            for b in bindings:
                if b["role"] == ROLE:
                    b["members"].append(member)
                    break
            else:
                bindings.append({"role": ROLE, "members": [member]})
            r = s.post(f"{base}:setIamPolicy", json={"policy": policy}, timeout=10)
            if r.status_code == 200:
                ledger.ack_binding(email, member)
                n += 1
            elif r.status_code != 409:  # 409 ABORTED: a stale etag; read again
                ledger.unexpected.append(f"setIamPolicy {r.status_code}: {r.text[:200]}")
                return
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return  # the server was killed: whatever was in flight (even a response cut short) is unacknowledged


def _minter(url: str, token: str, target: str, stop: threading.Event, ledger: Ledger) -> None:
    s = _session(token)
    try:
        while not stop.is_set():
            r = s.post(f"{url}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                       json={"scope": [CLOUD], "lifetime": "900s"}, timeout=10)
            if r.status_code != 200:
                ledger.unexpected.append(f"generateAccessToken {r.status_code}: {r.text[:200]}")
                return
            body = r.json()
            ledger.ack_token(body["accessToken"], body["expireTime"])
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return


def _restart(data_dir: Path) -> Server:
    # A killed server leaves its endpoints.json behind; start_server waits for a fresh one.
    (data_dir / "endpoints.json").unlink(missing_ok=True)
    return start_server(data_dir)


def _audit_hashes(srv: Server, token: str) -> dict[str, str]:
    """tokenHash -> expireTime of every successful GenerateAccessToken entry."""
    out: dict[str, str] = {}
    page = ""
    while True:
        params = {"filter": 'protoPayload.methodName="GenerateAccessToken"', "pageSize": "1000"}
        if page:
            params["pageToken"] = page
        r = requests.get(f"{srv.url}/v1/auditLog", params=params, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        body = r.json()
        for entry in body.get("entries", []):
            payload = entry["protoPayload"]
            if payload.get("status") == {} and "tokenHash" in payload.get("response", {}):
                out[payload["response"]["tokenHash"]] = payload["response"].get("expireTime", "")
        page = body.get("nextPageToken", "")
        if not page:
            return out


def _token_hash(master: MasterKey, token: str) -> str:
    body = token.removeprefix("ya29.").split(".")[0]
    token_id = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["j"]
    return hmac.new(master.audit_hash_key, token_id.encode(), hashlib.sha256).hexdigest()[:32]


def _check(srv: Server, owner_token: str, master: MasterKey, ledger: Ledger, round_no: int) -> None:
    headers = {"Authorization": f"Bearer {owner_token}"}
    by_account: dict[str, set[str]] = {}
    for email, member in ledger.bindings:
        by_account.setdefault(email, set()).add(member)
    for email, members in by_account.items():
        r = requests.post(f"{srv.url}/v1/projects/-/serviceAccounts/{email}:getIamPolicy", json={}, timeout=30,
                          headers=headers)
        assert r.status_code == 200, r.text
        stored = {m for b in r.json().get("bindings", []) if b["role"] == ROLE for m in b["members"]}
        lost = members - stored
        assert not lost, (f"after kill #{round_no}: {len(lost)} of {len(members)} acknowledged setIamPolicy "
                          f"bindings on {email} are gone: {sorted(lost)[:10]}")
    audited = _audit_hashes(srv, owner_token)
    missing = [(t[:24], e) for t, e in ledger.tokens if _token_hash(master, t) not in audited]
    assert not missing, (f"after kill #{round_no}: {len(missing)} of {len(ledger.tokens)} tokens a client "
                         f"received have no GenerateAccessToken audit entry: {missing[:5]}")
    wrong = [(e, audited[_token_hash(master, t)]) for t, e in ledger.tokens
             if audited[_token_hash(master, t)] != e]
    assert not wrong, f"audit entries whose expireTime differs from the client's: {wrong[:5]}"


def test_acknowledged_writes_and_credentials_survive_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = start_server(data_dir)
    try:
        owner_token = srv.owner_token
        target = srv.create_sa("minted-target")
        srv.grant(target, "user:owner@keyless.local", TOKEN_CREATOR)
        accounts = [srv.create_sa(f"policy-target-{i}") for i in range(WRITERS)]
        master = MasterKey(base64.b64decode((data_dir / "master.key").read_text().strip()))
        ledger = Ledger()
        for round_no in range(1, ROUNDS + 1):
            stop = threading.Event()
            with ledger.lock:
                want = (len(ledger.bindings) + PER_ROUND, len(ledger.tokens) + PER_ROUND)
            threads = [threading.Thread(target=_writer, args=(srv.url, owner_token, accounts[i], f"r{round_no}w{i}",
                                                              stop, ledger), daemon=True) for i in range(WRITERS)]
            threads += [threading.Thread(target=_minter, args=(srv.url, owner_token, target, stop, ledger),
                                         daemon=True) for _ in range(MINTERS)]
            for t in threads:
                t.start()
            with ledger.lock:
                reached = ledger.lock.wait_for(
                    lambda: (len(ledger.bindings) >= want[0] and len(ledger.tokens) >= want[1])
                    or bool(ledger.unexpected), timeout=ROUND_TIMEOUT)
            # Kill while the clients are mid-request.
            srv.process.send_signal(signal.SIGKILL)
            srv.process.wait(timeout=30)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert not ledger.unexpected, ledger.unexpected[:5]
            assert reached, f"round {round_no}: the load did not reach {want} in {ROUND_TIMEOUT}s"
            srv = _restart(data_dir)
            _check(srv, owner_token, master, ledger, round_no)
        assert len(ledger.bindings) >= ROUNDS * PER_ROUND and len(ledger.tokens) >= ROUNDS * PER_ROUND
    finally:
        srv.stop()
