"""A bounded fuzz run of the JSON and form parsers, in process: every POST/PATCH/PUT route gets random bytes,
deep nesting, huge numbers, wrong types, invalid UTF-8, duplicate keys, very long strings, and valid bodies
with one part mutated; form routes also get odd encodings. Nothing may answer 5xx, no exception may escape
the application (the TestClient re-raises what reaches Starlette's error middleware), and every 4xx must be in
its surface's error shape.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from keyless.clock import OffsetClock
from keyless.crypto.keys import MasterKey
from keyless.http.app import build_app
from keyless.service.app import Keyless
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
from keyless.storage.sqlite import SqliteStore
from tests.security.support import describe, error_shape_problem

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

EXAMPLES = 70
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
OWNER = "user:owner@keyless.local"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CONSTRAINT = "iam.allowServiceAccountCredentialLifetimeExtension"

# ------------------------------------------------------------------ values


HUGE_NUMBERS = ["1" * 400, "-" + "9" * 30, "1e400", "-1e400", "1e-400", "18446744073709551616", "-9223372036854775809",
                "9223372036854775807", "0.0000000000000000000000001", "-0", "1E+2", "NaN", "Infinity", "0x10"]
STRANGE_TEXT = ["", " ", "\u0000", "\ud800", "\U0001f600" * 50, "a\nb", "%00", "../../etc/passwd", "'; DROP TABLE x;--",
                "${jndi:ldap://x}", "<script>", "\u202e", "projects/-/serviceAccounts/", "@", ":", "=" * 10]

leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(STRANGE_TEXT),
    st.integers(min_value=1, max_value=1_100_000).map(lambda n: "x" * n),
)
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def _nest(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# ------------------------------------------------------------------ valid bodies per route


def _policy(email: str) -> dict[str, Any]:
    return {"policy": {"version": 3, "bindings": [
        {"role": "roles/iam.serviceAccountTokenCreator", "members": [OWNER, f"serviceAccount:{email}"]},
        {"role": "roles/iam.serviceAccountUser", "members": [OWNER],
         "condition": {"title": "t", "expression": "request.time < timestamp('2100-01-01T00:00:00Z')"}}]},
        "updateMask": "bindings"}


def _valid_bodies(email: str, unique_id: str, key: str) -> dict[str, tuple[str, str, dict[str, Any], str]]:
    """name -> (method, path, a body the route accepts, kind of body: json or form)."""
    sa = f"/v1/projects/-/serviceAccounts/{email}"
    delegates = {"delegates": [f"projects/-/serviceAccounts/{email}"]}
    return {
        "sa.create": ("POST", "/v1/projects/keyless-dev/serviceAccounts",
                      {"accountId": "fuzzed-account", "serviceAccount": {"displayName": "d", "description": "x"}},
                      "json"),
        "sa.patch": ("PATCH", sa, {"serviceAccount": {"displayName": "n", "description": "d"},
                                   "updateMask": "displayName,description"}, "json"),
        "sa.put": ("PUT", sa, {"displayName": "n", "etag": "a2V5bGVzcyE="}, "json"),
        "sa.disable": ("POST", f"{sa}:disable", {}, "json"),
        "sa.enable": ("POST", f"{sa}:enable", {}, "json"),
        "sa.undelete": ("POST", f"/v1/projects/-/serviceAccounts/{unique_id}:undelete", {}, "json"),
        "sa.getIamPolicy": ("POST", f"{sa}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}}, "json"),
        "sa.setIamPolicy": ("POST", f"{sa}:setIamPolicy", _policy(email), "json"),
        "sa.testIamPermissions": ("POST", f"{sa}:testIamPermissions",
                                  {"permissions": ["iam.serviceAccounts.getAccessToken"]}, "json"),
        "generateAccessToken": ("POST", f"{sa}:generateAccessToken",
                                {"scope": [CLOUD], "lifetime": "600s", **delegates}, "json"),
        "generateIdToken": ("POST", f"{sa}:generateIdToken",
                            {"audience": "https://x.example", "includeEmail": True, "useEmailAzp": "true",
                             "organizationNumberIncluded": False}, "json"),
        "signBlob": ("POST", f"{sa}:signBlob", {"payload": "aGVsbG8=", **delegates}, "json"),
        "signJwt": ("POST", f"{sa}:signJwt", {"payload": json.dumps({"sub": "x", "exp": 2**31})}, "json"),
        "iam.signBlob": ("POST", f"/v1/projects/keyless-dev/serviceAccounts/{email}:signBlob",
                         {"bytesToSign": "aGVsbG8="}, "json"),
        "iam.signJwt": ("POST", f"/v1/projects/keyless-dev/serviceAccounts/{email}:signJwt",
                        {"payload": '{"sub": "x"}'}, "json"),
        "keys.create": ("POST", f"{sa}/keys", {"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
                                               "keyAlgorithm": "KEY_ALG_RSA_2048"}, "json"),
        "keys.upload": ("POST", f"{sa}/keys:upload", {"publicKeyData": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t"},
                        "json"),
        "keys.disable": ("POST", f"{sa}/keys/{key}:disable",
                         {"serviceAccountKeyDisableReason": "SERVICE_ACCOUNT_KEY_DISABLE_REASON_USER_INITIATED"},
                         "json"),
        "keys.enable": ("POST", f"{sa}/keys/{key}:enable", {}, "json"),
        "project.v1.getIamPolicy": ("POST", "/v1/projects/keyless-dev:getIamPolicy",
                                    {"options": {"requestedPolicyVersion": 1}}, "json"),
        "project.v3.setIamPolicy": ("POST", "/v3/projects/fuzz-victim:setIamPolicy", _policy(email), "json"),
        "project.v1.testIamPermissions": ("POST", "/v1/projects/keyless-dev:testIamPermissions",
                                          {"permissions": ["resourcemanager.projects.get"]}, "json"),
        "orgpolicy.create": ("POST", "/v2/projects/fuzz-victim/policies",
                             {"name": f"projects/fuzz-victim/policies/{CONSTRAINT}",
                              "spec": {"rules": [{"allowAll": True}]}}, "json"),
        "orgpolicy.patch": ("PATCH", f"/v2/projects/fuzz-victim/policies/{CONSTRAINT}",
                            {"spec": {"rules": [{"values": {"allowedValues": [email]}}, {"denyAll": False}]},
                             "etag": "x"}, "json"),
        "orgpolicy.put": ("PUT", f"/v2/projects/fuzz-victim/policies/{CONSTRAINT}",
                          {"name": CONSTRAINT, "spec": {"rules": [{"denyAll": True}]}, "dryRunSpec": {}}, "json"),
        "users.create": ("POST", "/keyless/v1/users", {"email": "fuzzed@example.com"}, "json"),
        "groups.put": ("PUT", "/keyless/v1/groups/fuzz-group@example.com",
                       {"members": [OWNER, f"serviceAccount:{email}"], "email": "fuzz-group@example.com"}, "json"),
        "projects.create": ("POST", "/keyless/v1/projects", {"projectId": "fuzzed-project"}, "json"),
        "metadata.put": ("PUT", "/keyless/v1/metadata", {"serviceAccount": email}, "json"),
        "clock.advance": ("POST", "/keyless/v1/debug/clock:advance", {"seconds": 1}, "json"),
        "token.jwt": ("POST", "/token", {"grant_type": JWT_BEARER, "assertion": "a.b.c"}, "form"),
        "token.refresh": ("POST", "/oauth2/v4/token", {"grant_type": "refresh_token", "refresh_token": "r",
                                                       "client_id": "c", "client_secret": "s", "scope": CLOUD},
                          "form"),
        "token.google": ("POST", "/o/oauth2/token", {"grant_type": "refresh_token"}, "form"),
        "tokeninfo": ("POST", "/tokeninfo", {"access_token": "ya29.x.y"}, "form"),
        "tokeninfo.v1": ("POST", "/oauth2/v1/tokeninfo", {"id_token": "a.b.c"}, "form"),
        "tokeninfo.v3": ("POST", "/oauth2/v3/tokeninfo", {"access_token": "x"}, "form"),
        "revoke": ("POST", "/revoke", {"token": "ya29.x.y"}, "form"),
        "revoke.google": ("POST", "/o/oauth2/revoke", {"token": "x"}, "form"),
    }


ROUTES = list(_valid_bodies("e@x", "1", "k"))


# ------------------------------------------------------------------ mutations


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    if isinstance(value, dict):
        return {k: (_replace(v, path[1:], new) if k == path[0] else v) for k, v in value.items()}
    return [(_replace(v, path[1:], new) if i == path[0] else v) for i, v in enumerate(value)]


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> Any:
    """The valid body with one part replaced, removed, or an unknown field added."""
    spots = _paths(valid)
    spot = draw(st.sampled_from(spots))
    action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
    if action == "drop" and spot:
        parent = spot[:-1]
        holder: Any = valid
        for part in parent:
            holder = holder[part]
        if isinstance(holder, dict):
            return _replace(valid, parent, {k: v for k, v in holder.items() if k != spot[-1]})
        return _replace(valid, parent, [v for i, v in enumerate(holder) if i != spot[-1]])
    if action == "add":
        return {**valid, draw(st.text(min_size=1, max_size=10)): draw(json_values)}
    return _replace(valid, spot, draw(json_values))


def _encode_json(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def raw_json_bodies(draw: st.DrawFn, valid: dict[str, Any]) -> tuple[bytes, str]:
    """(body bytes, content type) for a JSON route."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "random-json", "bytes", "nesting", "number",
                                 "duplicate", "invalid-utf8", "long", "truncated", "wrong-top"]))
    ctype = draw(st.sampled_from(["application/json", "application/json", "application/json; charset=utf-16",
                                  "text/plain", "application/x-www-form-urlencoded", ""]))
    if kind == "mutated":
        return _encode_json(draw(mutated(valid))), ctype
    if kind == "random-json":
        return _encode_json(draw(json_values)), ctype
    if kind == "bytes":
        return draw(st.binary(max_size=600)), ctype
    if kind == "nesting":
        depth = draw(st.sampled_from([100, 1023, 1024, 1025, 5000, 50_000]))
        nested = _nest(depth, draw(st.sampled_from(["list", "dict"])))
        field = draw(st.sampled_from(list(valid) or ["x"]))
        return (f'{{"{field}": {nested}}}' if draw(st.booleans()) else nested).encode(), ctype
    if kind == "number":
        field = draw(st.sampled_from(list(valid) or ["x"]))
        return f'{{"{field}": {draw(st.sampled_from(HUGE_NUMBERS))}}}'.encode(), ctype
    if kind == "duplicate":
        text = _encode_json(valid).decode()
        field = draw(st.sampled_from(list(valid) or ["x"]))
        return ("{" + f'"{field}": {json.dumps(draw(json_values))}, ' + text[1:]
                if len(text) > 2 else f'{{"{field}": 1, "{field}": "2"}}').encode(), ctype
    if kind == "invalid-utf8":
        encoded = _encode_json(valid)
        cut = draw(st.integers(min_value=0, max_value=len(encoded)))
        return encoded[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                                  b"\x00", b'"\\ud800"', b"\xef\xbb\xbf"])) + encoded[cut:], ctype
    if kind == "long":
        field = draw(st.sampled_from(list(valid) or ["x"]))
        size = draw(st.sampled_from([10_000, 200_000, 1_048_000, 1_048_577, 2_000_000]))
        return json.dumps({**valid, field: "y" * size}).encode(), ctype
    if kind == "truncated":
        encoded = _encode_json(valid)
        return encoded[: draw(st.integers(min_value=0, max_value=max(0, len(encoded) - 1)))], ctype
    return _encode_json(draw(st.sampled_from([[valid], "x", 1, None, True, []]))), ctype


@st.composite
def form_bodies(draw: st.DrawFn, valid: dict[str, Any]) -> tuple[bytes, str]:
    """(body bytes, content type) for an OAuth form route."""
    from urllib.parse import urlencode

    kind = draw(st.sampled_from(["mutated", "mutated", "percent", "bytes", "many", "json", "json-bytes",
                                 "separators", "long", "invalid-utf8"]))
    ctype = draw(st.sampled_from(["application/x-www-form-urlencoded", "application/x-www-form-urlencoded",
                                  "application/x-www-form-urlencoded; charset=ISO-8859-1", "application/json",
                                  "multipart/form-data; boundary=xyz", "text/plain", ""]))
    if kind == "mutated":
        body = {k: v for k, v in valid.items() if draw(st.booleans()) or k == "grant_type"}
        if draw(st.booleans()):
            body[draw(st.sampled_from([*valid, "scope", "assertion", "token"]))] = draw(
                st.one_of(st.text(max_size=60), st.sampled_from(STRANGE_TEXT)))
        return urlencode(body, encoding="utf-8", errors="surrogatepass").encode(), ctype
    if kind == "percent":
        chunks = draw(st.lists(st.sampled_from(["%", "%F", "%FF", "%00", "%C3%28", "%ED%A0%80", "+", "&", "=", "a",
                                                "grant_type=", "assertion=", "%E2%82", "%%", "%zz", ";"]),
                               max_size=30))
        return ("".join(chunks)).encode(), ctype
    if kind == "bytes":
        return draw(st.binary(max_size=600)), ctype
    if kind == "many":
        count = draw(st.sampled_from([99, 100, 101, 5000]))
        return "&".join(f"f{i}=v" for i in range(count)).encode(), ctype
    if kind == "json":
        return _encode_json(draw(st.one_of(mutated(valid), json_values))), ctype
    if kind == "json-bytes":
        return draw(st.sampled_from([_nest(2000, "list"), _nest(2000, "dict"), '{"grant_type": 1e400}', "[1]",
                                     '{"grant_type": "refresh_token", "grant_type": ["x"]}', "\ufeff{}"])).encode(), \
            "application/json"
    if kind == "separators":
        return draw(st.sampled_from([b"&&&&", b"===", b"a=b=c", b"grant_type", b"=x", b"&=&", b";;", b"\r\n",
                                     b"grant_type=refresh_token&grant_type=" + JWT_BEARER.encode()])), ctype
    if kind == "long":
        size = draw(st.sampled_from([10_000, 1_048_000, 1_048_577]))
        return urlencode({**valid, "assertion": "z" * size}).encode(), ctype
    base = urlencode(valid).encode()
    cut = draw(st.integers(min_value=0, max_value=len(base)))
    return base[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + base[cut:], ctype


# ------------------------------------------------------------------ the app


class Fuzzed:
    def __init__(self, keyless: Keyless, owner: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.client = TestClient(build_app(keyless), base_url="http://testserver", raise_server_exceptions=True)
        self.owner = owner
        self.loop = loop
        self.token = self.refresh()

    def refresh(self) -> str:
        r = self.client.post("/token", data={"grant_type": "refresh_token", "client_id": self.owner["client_id"],
                                             "client_secret": self.owner["client_secret"],
                                             "refresh_token": self.owner["refresh_token"]})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def ok(self, method: str, path: str, body: Any) -> Any:
        r = self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[tuple[Fuzzed, dict[str, tuple[str, str, dict[str, Any], str]]]]:
    """An in-process keyless on an OffsetClock (so the time-travel route is live too), with an account, a key,
    a group, a second project with an org policy, and the owner allowed to mint the account's credentials."""
    loop = asyncio.new_event_loop()
    store = SqliteStore(tmp_path / "keyless.db")
    loop.run_until_complete(store.open())
    kl = Keyless(store, OffsetClock(), Settings(public_url="http://testserver"), MasterKey(secrets.token_bytes(32)))
    boot = loop.run_until_complete(bootstrap(kl, tmp_path))
    app = Fuzzed(kl, json.loads(boot.owner_file.read_text()), loop)
    try:
        account = app.ok("POST", "/v1/projects/keyless-dev/serviceAccounts", {"accountId": "fuzz-target"})
        email = account["email"]
        app.ok("POST", f"/v1/projects/-/serviceAccounts/{email}:setIamPolicy", {"policy": {"bindings": [
            {"role": "roles/iam.serviceAccountTokenCreator", "members": [OWNER]}]}})
        key = app.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})["name"].rsplit("/", 1)[1]
        app.ok("POST", "/keyless/v1/projects", {"projectId": "fuzz-victim"})
        yield app, _valid_bodies(email, account["uniqueId"], key)
    finally:
        app.client.close()
        loop.run_until_complete(store.close())
        loop.close()


def _send(app: Fuzzed, method: str, path: str, body: bytes, ctype: str, failures: list[str]) -> None:
    headers = {"Authorization": f"Bearer {app.token}"}
    if ctype:
        headers["Content-Type"] = ctype
    try:
        r = app.client.request(method, path, content=body, headers=headers)
    except Exception as exc:  # an exception that escaped the application
        failures.append(f"exception {type(exc).__name__}: {exc!s:.300}\n    "
                        + describe(method, path, {"content-type": ctype}, body, 0, ""))
        return
    problem = error_shape_problem(path, r.status_code, r.headers.get("content-type", ""), r.text)
    if problem:
        failures.append(f"{problem}\n    " + describe(method, path, {"content-type": ctype}, body, r.status_code,
                                                       r.text))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("route", ROUTES)
def test_parsers_survive_bad_bodies(fuzzed: tuple[Fuzzed, dict[str, Any]], route: str) -> None:
    app, bodies = fuzzed
    method, path, valid, kind = bodies[route]
    failures: list[str] = []
    strategy = form_bodies(valid) if kind == "form" else raw_json_bodies(valid)
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(sample=strategy)
    def run(sample: tuple[bytes, str]) -> None:
        body, ctype = sample
        _send(app, method, path, body, ctype, failures)
        if route == "clock.advance":
            # The owner's token may have expired with the jump; minting a new one must still work.
            try:
                app.token = app.refresh()
            except Exception as exc:
                failures.append(f"after the body above, the owner's refresh-token grant failed: "
                                f"{type(exc).__name__}: {exc!s:.300}\n    "
                                + describe(method, path, {"content-type": ctype}, body, 0, ""))

    run()
    # The valid body itself is still served (the run did not leave the app broken).
    if kind == "json" and route not in ("clock.advance", "users.create", "projects.create", "sa.create"):
        _send(app, method, path, _encode_json(valid), "application/json", failures)
    assert not failures, (f"{len(failures)} bad answers on {route} ({time.monotonic() - started:.1f}s):\n"
                          + "\n".join(failures[:10]))


def test_oversized_and_chunked_bodies_are_refused_before_parsing(fuzzed: tuple[Fuzzed, dict[str, Any]]) -> None:
    app, bodies = fuzzed
    failures: list[str] = []
    for route in ("generateAccessToken", "token.jwt", "sa.setIamPolicy"):
        method, path, _valid, kind = bodies[route]
        ctype = "application/x-www-form-urlencoded" if kind == "form" else "application/json"
        big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        _send(app, method, path, big, ctype, failures)
        r = app.client.request(method, path, content=big, headers={"Authorization": f"Bearer {app.token}",
                                                                   "Content-Type": ctype})
        assert r.status_code == 413, (route, r.status_code, r.text[:200])

        def chunks() -> Iterator[bytes]:
            for _ in range(40):
                yield b" " * 65536

        r = app.client.request(method, path, content=chunks(), headers={"Authorization": f"Bearer {app.token}",
                                                                         "Content-Type": ctype})
        assert r.status_code == 413, (route, r.status_code, r.text[:200])
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("seconds", [1e300, 1.7e308, 10**18, 2**63, "99999999999999999s", "315360000000s",
                                     "9223372036854775807s"])
def test_clock_advance_refuses_seconds_beyond_the_calendar(fuzzed: tuple[Fuzzed, dict[str, Any]],
                                                           seconds: Any) -> None:
    """Time travel is a test aid, but a request must not be able to break the server: a jump past what a
    timestamp can express is refused, and the server keeps answering."""
    app, _ = fuzzed
    failures: list[str] = []
    _send(app, "POST", "/keyless/v1/debug/clock:advance", json.dumps({"seconds": seconds}).encode(),
          "application/json", failures)
    # Whatever the answer, the token endpoint (which writes an audit entry) must still work afterwards.
    _send(app, "POST", "/token", b"grant_type=refresh_token&refresh_token=x&client_id=y&client_secret=z",
          "application/x-www-form-urlencoded", failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("route", "field"), [
    ("generateAccessToken", "scope"), ("generateAccessToken", "delegates"), ("generateAccessToken", "lifetime"),
    ("generateIdToken", "audience"), ("signBlob", "delegates"), ("sa.setIamPolicy", "policy"),
    ("sa.setIamPolicy", "updateMask"), ("project.v3.setIamPolicy", "updateMask"),
])
def test_deeply_nested_audited_fields_are_answered(fuzzed: tuple[Fuzzed, dict[str, Any]], route: str,
                                                   field: str) -> None:
    """A field the audit log records, sent as JSON nested 300 deep (orjson parses up to 1024 levels but
    serialises only 254): the request is refused or served, never a 500 from writing its audit entry."""
    app, bodies = fuzzed
    method, path, valid, _ = bodies[route]
    failures: list[str] = []
    for nested in (_nest(300, "list"), _nest(300, "dict")):
        body = json.dumps({k: v for k, v in valid.items() if k != field})[:-1].rstrip()
        body = (body + ", " if body != "{" else body) + f'"{field}": {nested}}}'
        _send(app, method, path, body.encode(), "application/json", failures)
    assert not failures, "\n".join(failures)


def test_oversized_url_and_headers_answer_in_shape(fuzzed: tuple[Fuzzed, dict[str, Any]]) -> None:
    """The edge limits (URL length, header size) refuse in Google's error shape, its code the HTTP status."""
    app, bodies = fuzzed
    failures: list[str] = []
    method, path, valid, _ = bodies["generateAccessToken"]
    cases = [
        (method, path + "?x=" + "a" * 5000, {}),
        ("GET", "/v1/projects/keyless-dev/serviceAccounts/" + "b" * 5000, {}),
        (method, path, {"X-Padding": "c" * 20_000}),
        (method, path, {f"X-Many-{i}": "d" * 100 for i in range(200)}),
    ]
    for verb, url, extra in cases:
        r = app.client.request(verb, url, json=valid, headers={"Authorization": f"Bearer {app.token}", **extra})
        problem = error_shape_problem(url.split("?")[0], r.status_code, r.headers.get("content-type", ""), r.text)
        if problem or r.status_code < 400:
            failures.append(f"{problem or 'accepted'}: {verb} {url[:80]}... headers {len(str(extra))} bytes "
                            f"-> {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
