"""google-auth's ``external_account`` credentials, unchanged, against keyless's STS (workload identity federation):
the credential sources tests/federation does not cover, each found through ``google.auth.default()`` with
``GOOGLE_APPLICATION_CREDENTIALS`` naming the file, as a workload finds it.

* URL-sourced: a local HTTP server stands in for a token service (it answers only requests carrying the header the
  file names), the token as text or as a JSON field;
* executable-sourced (``pluggable``): a script prints Google's executable response, allowed by
  ``GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`` (and refused by google-auth without it);
* ID tokens through ``impersonated_credentials.IDTokenCredentials`` over such a credential (which has no endpoint
  option: through the proxy only).

Each runs in a fresh interpreter with what ``keyless env`` prints (the proxy brings sts and iamcredentials to
keyless), and once with keyless's URLs in the file and no proxy.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import jwt
import pytest
import requests

from tests.compat.conftest import CompatEnv
from tests.compat.federation_support import JWT_TYPE, WifWorld, wif_world
from tests.conftest import CLOUD

AUTH = f"google-auth {version('google-auth')}"
HEADER = ("Metadata-Flavor", "Kubernetes")
AUDIENCE = "https://wif.compat.keyless.test"

SCRIPT = """
import json, os, google.auth
from google.auth import identity_pool, impersonated_credentials, pluggable
from google.auth.transport.requests import Request
creds, _ = google.auth.default(scopes=[os.environ["SCOPE"]])
creds.refresh(Request())
out = {"kind": type(creds).__module__ + "." + type(creds).__name__, "token": creds.token}
if os.environ.get("ID_TOKEN_FOR"):
    # The file without its impersonation URL is the source; the account is impersonated for the ID token.
    info = json.load(open(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]))
    info.pop("service_account_impersonation_url", None)
    kind = pluggable.Credentials if "executable" in info["credential_source"] else identity_pool.Credentials
    source = kind.from_info(info, scopes=[os.environ["SCOPE"]])
    target = impersonated_credentials.Credentials(source_credentials=source,
                                                  target_principal=os.environ["ID_TOKEN_FOR"],
                                                  target_scopes=[os.environ["SCOPE"]])
    idt = impersonated_credentials.IDTokenCredentials(target, target_audience=os.environ["ID_AUDIENCE"], include_email=True)
    idt.refresh(Request())
    out["id_token"] = idt.token
print(json.dumps(out))
"""


class TokenService:
    """A token service on loopback (what a URL-sourced credential reads): ``/text`` answers the token as text,
    ``/json`` as ``{"id_token": …}``; only to requests carrying ``HEADER``. Counts what it served."""

    def __init__(self, world: WifWorld) -> None:
        self.world = world
        self.served = 0
        self.namespace = "prod"
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get(HEADER[0]) != HEADER[1]:
                    self.send_response(403)
                    self.end_headers()
                    return
                token = service.world.token(service.namespace)
                body = (token if self.path == "/text" else json.dumps({"id_token": token})).encode()
                service.served += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def source(self, fmt: str) -> dict[str, Any]:
        out: dict[str, Any] = {"url": f"{self.url}/{fmt}", "headers": dict([HEADER])}
        out["format"] = {"type": "text"} if fmt == "text" else {"type": "json",
                                                                "subject_token_field_name": "id_token"}
        return out


@pytest.fixture(scope="module")
def wif(compat: CompatEnv) -> WifWorld:
    return wif_world(compat)


@pytest.fixture(scope="module")
def token_service(wif: WifWorld) -> Iterator[TokenService]:
    service = TokenService(wif)
    service.thread.start()
    try:
        yield service
    finally:
        service.httpd.shutdown()
        service.httpd.server_close()


def run_default(wif: WifWorld, cred_file: Any, *, proxy: bool = True, id_token: bool = False,
                **extra: str) -> dict[str, Any]:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(cred_file), "SCOPE": CLOUD, "ID_AUDIENCE": AUDIENCE, **extra}
    if id_token:
        env["ID_TOKEN_FOR"] = wif.account
    proc = wif.compat.run_python(SCRIPT, extra_env=env, proxy=proxy)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def tokeninfo(wif: WifWorld, token: str) -> dict[str, Any]:
    r = requests.get(f"{wif.compat.server.url}/tokeninfo", params={"access_token": token}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def row(call: str, route: str = "proxy") -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.1", client=AUTH, call=call, route=route)


@pytest.mark.parametrize("fmt", [
    pytest.param("text", marks=row("google.auth.default() external_account, URL-sourced token (text, headers), impersonated, ID token"),
                 id="text"),
    pytest.param("json", marks=row("google.auth.default() external_account, URL-sourced token (json, headers), impersonated, ID token"),
                 id="json")])
def test_url_sourced_credentials(wif: WifWorld, token_service: TokenService, fmt: str) -> None:
    plain = wif.credential_file(f"url-{fmt}.json", token_service.source(fmt), impersonate=False)
    served = token_service.served
    got = run_default(wif, plain)
    assert "error" not in got, got["error"]
    assert got["kind"] == "google.auth.identity_pool.Credentials"
    assert tokeninfo(wif, got["token"])["sub"] == wif.member
    assert token_service.served == served + 1  # the token came from the service, with its header
    impersonating = wif.credential_file(f"url-{fmt}-imp.json", token_service.source(fmt), impersonate=True)
    got = run_default(wif, impersonating, id_token=True)
    assert "error" not in got, got["error"]
    assert tokeninfo(wif, got["token"])["email"] == wif.account
    claims = jwt.decode(got["id_token"], options={"verify_signature": False})
    assert (claims["aud"], claims["email"]) == (AUDIENCE, wif.account)


@row("google.auth.default() external_account, URL-sourced, impersonated", route="token_url / "
     "service_account_impersonation_url")
def test_url_sourced_direct(wif: WifWorld, token_service: TokenService) -> None:
    """keyless's URLs in the file, no proxy at all. ``google.auth.default()`` asks Resource Manager (Google's
    URL) for the project of an external account unless ``GOOGLE_CLOUD_PROJECT`` names it: without the proxy, it
    must. (``IDTokenCredentials`` has no endpoint option: ID tokens need the proxy.)"""
    cred = wif.credential_file("url-direct.json", token_service.source("json"), impersonate=True, direct=True)
    got = run_default(wif, cred, proxy=False, GOOGLE_CLOUD_PROJECT="keyless-dev")
    assert "error" not in got, got["error"]
    assert tokeninfo(wif, got["token"])["email"] == wif.account


def _executable(wif: WifWorld, name: str, namespace: str = "prod") -> dict[str, Any]:
    """A credential source running a script that prints Google's executable response."""
    response = wif.base / f"{name}-response.json"
    response.write_text(json.dumps({"version": 1, "success": True, "token_type": JWT_TYPE,
                                    "id_token": wif.token(namespace)}))
    script = wif.base / f"{name}.sh"
    script.write_text(f"#!/bin/sh\ncat {response}\n")
    script.chmod(0o755)
    return {"executable": {"command": str(script), "timeout_millis": 5000}}


@row("google.auth.default() external_account, executable-sourced (GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1), "
     "impersonated, and an ID token")
def test_executable_sourced_credentials(wif: WifWorld) -> None:
    cred = wif.credential_file("exe.json", _executable(wif, "exe"), impersonate=True)
    got = run_default(wif, cred, id_token=True, GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES="1")
    assert "error" not in got, got["error"]
    assert got["kind"] == "google.auth.pluggable.Credentials"
    assert tokeninfo(wif, got["token"])["email"] == wif.account
    claims = jwt.decode(got["id_token"], options={"verify_signature": False})
    assert (claims["aud"], claims["email"]) == (AUDIENCE, wif.account)
    # google-auth runs no executable unless allowed; a workload the condition refuses gets nothing.
    assert "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES" in run_default(wif, cred)["error"]
    refused = wif.credential_file("exe-dev.json", _executable(wif, "exe-dev", namespace="dev"), impersonate=True)
    got = run_default(wif, refused, GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES="1")
    assert "rejected by the attribute condition" in got["error"]
