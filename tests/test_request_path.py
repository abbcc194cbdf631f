"""How many keyless functions a ``generateAccessToken`` with two delegates passes through (docs/architecture.md).

The request goes through the API port's whole ASGI application (edge, route, adapter, core, audit commit,
store) in this process, with a profiler counting every distinct keyless function (comprehensions included)
that runs until the response is sent. Three states: ``first`` (nothing cached: a fresh token, the first
request after the policies changed), ``walk`` (a conditional grant: the chain decided on every request, the
read cache and the caller's token warm) and ``warm`` (the granted chain remembered). The bounds are the figures docs/architecture.md
records; a change that adds layers to the hot path fails here, and one that removes some lowers them there.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode

import pytest

import keyless
from keyless.clock import SystemClock
from keyless.crypto.keys import MasterKey
from keyless.http.app import build_app
from keyless.service.app import Keyless
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
from keyless.storage.cache import CachingStore
from keyless.storage.sqlite import SqliteStore

SOURCE = os.path.dirname(keyless.__file__)
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
# Measured at 47bdb11, before the one-request-path work, with this very test: first 108, walk 93, warm 61.
BOUNDS = {"first": 54, "walk": 44, "warm": 25}


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = CachingStore(SqliteStore(tmp / "keyless.db"))
        self.loop.run_until_complete(self.store.open())
        self.keyless = Keyless(self.store, SystemClock(), Settings(public_url="http://testserver"),
                               MasterKey(secrets.token_bytes(32)))
        boot = self.loop.run_until_complete(bootstrap(self.keyless, tmp))
        self.owner = json.loads(boot.owner_file.read_text())
        self.app = build_app(self.keyless)

    def call(self, method: str, path: str, body: bytes, content_type: str, token: str | None = None
             ) -> tuple[int, Any]:
        headers = [(b"host", b"testserver"), (b"content-length", str(len(body)).encode()),
                   (b"content-type", content_type.encode())]
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("testserver", 80), "scheme": "http",
                 "http_version": "1.1", "root_path": "", "asgi": {"version": "3.0"}}
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.app(scope, receive, send))
        return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    def json_call(self, method: str, path: str, body: Any, token: str) -> Any:
        status, answer = self.call(method, path, json.dumps(body).encode(), "application/json", token)
        assert status == 200, answer
        return answer


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.loop.run_until_complete(h.store.close())
    h.loop.close()


def _count(harness: Harness, path: str, body: bytes, token: str) -> tuple[int, set[tuple[str, int, str]]]:
    seen: set[tuple[str, int, str]] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(SOURCE):
            code = frame.f_code
            seen.add((code.co_filename[len(SOURCE) + 1:], code.co_firstlineno, code.co_qualname))

    sys.setprofile(profile)
    try:
        status, answer = harness.call("POST", path, body, "application/json", token)
    finally:
        sys.setprofile(None)
    assert status == 200, answer
    return len(seen), seen


def test_generate_access_token_with_two_delegates_passes_through_few_functions(harness: Harness) -> None:
    owner = harness.owner
    status, grant = harness.call("POST", "/token", urlencode({
        "grant_type": "refresh_token", "client_id": owner["client_id"], "client_secret": owner["client_secret"],
        "refresh_token": owner["refresh_token"]}).encode(), "application/x-www-form-urlencoded")
    assert status == 200, grant
    token = grant["access_token"]
    emails = [harness.json_call("POST", "/v1/projects/keyless-dev/serviceAccounts", {"accountId": f"robot-{n}"},
                                token)["email"] for n in ("one", "two", "three")]
    members = [f"user:{owner['account']}", f"serviceAccount:{emails[0]}",
               f"serviceAccount:{emails[1]}"]
    for email, member in zip(emails, members, strict=True):
        resource = f"/v1/projects/-/serviceAccounts/{email}"
        policy = harness.json_call("POST", f"{resource}:getIamPolicy", {}, token)
        policy.setdefault("bindings", []).append({"role": TOKEN_CREATOR, "members": [member]})
        harness.json_call("POST", f"{resource}:setIamPolicy", {"policy": policy}, token)
    path = f"/v1/projects/-/serviceAccounts/{emails[2]}:generateAccessToken"
    body = json.dumps({"scope": ["https://www.googleapis.com/auth/cloud-platform"],
                       "delegates": [f"projects/-/serviceAccounts/{emails[0]}",
                                     f"projects/-/serviceAccounts/{emails[1]}"]}).encode()
    counts = {}
    paths = {}
    counts["first"], paths["first"] = _count(harness, path, body, token)
    counts["warm"], paths["warm"] = _count(harness, path, body, token)
    # A conditional grant on the last hop: the chain is decided on every request (no decision remembered), the
    # read cache and the caller's token warm.
    resource = f"/v1/projects/-/serviceAccounts/{emails[2]}"
    policy = harness.json_call("POST", f"{resource}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}}, token)
    policy["version"] = 3
    policy["bindings"][-1]["condition"] = {"title": "until 2100",
                                           "expression": 'request.time < timestamp("2100-01-01T00:00:00Z")'}
    harness.json_call("POST", f"{resource}:setIamPolicy", {"policy": policy}, token)
    _count(harness, path, body, token)
    counts["walk"], paths["walk"] = _count(harness, path, body, token)
    print(counts)
    if os.environ.get("KEYLESS_SHOW_PATH"):
        print("\n".join(f"{state}: {sorted(found)}" for state, found in paths.items()))
    for state, bound in BOUNDS.items():
        assert counts[state] <= bound, (state, counts, sorted(paths[state]))
