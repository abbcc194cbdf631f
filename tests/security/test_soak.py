"""A bounded soak on loopback: about two minutes of steady load on a real server, whose resident memory and
open file descriptors must stay flat.

Four client threads run for the whole soak: two mint access tokens (``generateAccessToken``) on kept-alive
connections, one checks them at ``/tokeninfo`` on a new connection per request (so a socket the server fails
to close would show), and one refreshes the owner's token at ``/token``. The server's VmRSS and its number
of open descriptors are sampled from /proc every two seconds. After a warm-up, the largest value of the last
third may exceed the largest of the first third by at most 20 MB of RSS and 10 descriptors.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import CLOUD, Server, start_server

SOAK_SECONDS = 110.0
WARM_UP_SECONDS = 15.0
SAMPLE_EVERY = 2.0
MAX_RSS_GROWTH_KB = 20 * 1024
MAX_FD_GROWTH = 10
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


@dataclass
class Load:
    stop: threading.Event = field(default_factory=threading.Event)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latest_token: str = ""
    have_token: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)
        self.stop.set()


def _minter(srv: Server, owner: str, target: str, load: Load) -> None:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {owner}"
    url = f"{srv.url}/v1/projects/-/serviceAccounts/{target}:generateAccessToken"
    while not load.stop.is_set():
        r = s.post(url, json={"scope": [CLOUD], "lifetime": "600s"}, timeout=30)
        if r.status_code != 200:
            load.fail(f"generateAccessToken {r.status_code}: {r.text[:200]}")
            return
        load.latest_token = r.json()["accessToken"]
        load.have_token.set()
        load.count("generateAccessToken")


def _tokeninfo(srv: Server, load: Load) -> None:
    load.have_token.wait(timeout=60)
    while not load.stop.is_set():
        token = load.latest_token
        r = requests.get(f"{srv.url}/tokeninfo", params={"access_token": token}, timeout=30,
                         headers={"Connection": "close"})
        if r.status_code != 200:
            load.fail(f"tokeninfo {r.status_code}: {r.text[:200]}")
            return
        load.count("tokeninfo")


def _refresher(srv: Server, load: Load) -> None:
    while not load.stop.is_set():
        try:
            srv.user_token(srv.owner_file)
        except AssertionError as exc:
            load.fail(f"refresh-token grant: {exc}")
            return
        load.count("token")
        load.stop.wait(0.1)  # pacing, not synchronisation: about ten grants a second


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@pytest.mark.timeout(300)
def test_memory_and_descriptors_stay_flat_under_steady_load(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    load = Load()
    threads: list[threading.Thread] = []
    try:
        owner = srv.owner_token
        target = srv.create_sa("soak-target")
        srv.grant(target, "user:owner@keyless.local", TOKEN_CREATOR)
        pid = srv.process.pid
        threads = [threading.Thread(target=_minter, args=(srv, owner, target, load), daemon=True) for _ in range(2)]
        threads += [threading.Thread(target=_tokeninfo, args=(srv, load), daemon=True),
                    threading.Thread(target=_refresher, args=(srv, load), daemon=True)]
        for t in threads:
            t.start()
        samples: list[tuple[float, int, int]] = []
        started = time.monotonic()
        while not load.stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= SOAK_SECONDS:
                break
            assert srv.process.poll() is None, "the server died during the soak"
            samples.append((elapsed, _rss_kb(pid), _fds(pid)))
            load.stop.wait(SAMPLE_EVERY)
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=30)
        srv.stop()
    assert not load.errors, load.errors[:5]
    steady = [s for s in samples if s[0] >= WARM_UP_SECONDS]
    assert len(steady) >= 9, f"too few samples: {len(steady)}"
    third = len(steady) // 3
    first, last = steady[:third], steady[-third:]
    rss_growth = max(s[1] for s in last) - max(s[1] for s in first)
    fd_growth = max(s[2] for s in last) - max(s[2] for s in first)
    trace = ", ".join(f"{int(t)}s:{rss // 1024}MB/{fds}fd" for t, rss, fds in samples[::5])
    requests_made = sum(load.counts.values())
    print(f"soak: {requests_made} requests {load.counts}; {trace}")
    assert load.counts.get("generateAccessToken", 0) > 200 and load.counts.get("tokeninfo", 0) > 100, load.counts
    assert rss_growth < MAX_RSS_GROWTH_KB, (f"RSS grew by {rss_growth // 1024} MB over the soak "
                                            f"({requests_made} requests {load.counts}): {trace}")
    assert fd_growth < MAX_FD_GROWTH, (f"open descriptors grew by {fd_growth} over the soak "
                                       f"({requests_made} requests): {trace}")
