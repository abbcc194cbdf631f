"""The web console's files on the API port (``keyless.console``): served from the package with a strict
Content-Security-Policy and no framing; only the files that ship are served (an unknown name, a path with a
slash, any method but GET: Google-shaped 404/405); no page builds markup from data; the console's OAuth client
may only send its codes to loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from keyless.domain.oauth_clients import CONSOLE_CLIENT_ID, GCLOUD_CLIENT_ID, find_client, redirect_allowed
from keyless.http.app import build_app
from tests.http.helpers import NoServerErrors as TestClient

STATIC = resources.files("keyless.console").joinpath("static")
OWN_MODULES = sorted(p.name for p in STATIC.iterdir() if p.name.endswith(".js") and not p.name.startswith("cytoscape"))


@pytest.fixture
def client(inproc: Any) -> Iterator[TestClient]:
    with TestClient(build_app(inproc.keyless), base_url="http://127.0.0.1:8093") as c:
        yield c


def _csp(value: str) -> dict[str, str]:
    return {part.split()[0]: part.partition(" ")[2] for part in (p.strip() for p in value.split(";")) if part}


def test_the_page_has_a_strict_policy_and_is_never_framed(client: TestClient) -> None:
    r = client.get("/console/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = _csp(r.headers["content-security-policy"])
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in r.headers


def test_the_page_has_no_inline_script_or_style(client: TestClient) -> None:
    html = client.get("/console/").text
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert "<style" not in html and " style=" not in html and "javascript:" not in html
    assert re.findall(r"\son\w+=", html) == []


@pytest.mark.parametrize("name", ["app.js", "console.css", "cytoscape.esm.min.js", *OWN_MODULES])
def test_each_file_is_served_with_its_type_and_the_headers(client: TestClient, name: str) -> None:
    r = client.get(f"/console/{name}")
    assert r.status_code == 200
    assert r.content == STATIC.joinpath(name).read_bytes()
    expected = "text/css" if name.endswith(".css") else "text/javascript"
    assert r.headers["content-type"].startswith(expected)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_every_module_a_page_imports_is_served(client: TestClient) -> None:
    """The pages load offline: each relative import (static or dynamic) and the index's files are in the package."""
    wanted = set(re.findall(r'(?:src|href)="([\w.-]+\.(?:js|css))"', client.get("/console/").text))
    for name in OWN_MODULES:
        text = STATIC.joinpath(name).read_text()
        wanted |= set(re.findall(r'from "\./([\w.-]+)"', text)) | set(re.findall(r'import\("\./([\w.-]+)"\)', text))
        wanted |= set(re.findall(r'"\./(page-[\w-]+\.js)"', text))
        assert "https://" not in text.replace("https://www.googleapis.com/auth/cloud-platform", ""), name
    assert {"app.js", "api.js", "auth.js", "dom.js", "console.css", "cytoscape.esm.min.js"} <= wanted
    for name in wanted:
        assert client.get(f"/console/{name}").status_code == 200, name


def test_no_page_builds_markup_from_text() -> None:
    """Everything is rendered with text nodes (dom.js's h()): no innerHTML, outerHTML, insertAdjacentHTML,
    document.write, eval or Function in the console's own modules."""
    for name in OWN_MODULES:
        text = STATIC.joinpath(name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "setAttribute(\"style", "localStorage", "document.cookie"):
            assert sink not in text, f"{name} uses {sink}"


def test_unchanged_files_are_not_sent_again(client: TestClient) -> None:
    first = client.get("/console/app.js")
    again = client.get("/console/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/index.htm", "/console/sub/app.js",
                                  "/console/..%2f__init__.py", "/console/__init__.py", "/console/cytoscape.LICENSE.txt",
                                  "/console//app.js"])
def test_unknown_paths_are_404_in_googles_shape(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_console_takes_get_only(client: TestClient, method: str) -> None:
    r = client.request(method, "/console/app.js")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"


def test_console_without_slash_redirects(client: TestClient) -> None:
    r = client.get("/console", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/console/"


def test_the_console_client_sends_codes_to_loopback_only() -> None:
    console = find_client(CONSOLE_CLIENT_ID)
    assert console is not None
    for uri in ("http://127.0.0.1:8093/console/", "http://localhost:1/console/", "https://127.0.0.1:8443/console/",
                "http://[::1]:8093/console/"):
        assert redirect_allowed(console, uri), uri
    for uri in ("https://evil.example/console/", "http://127.0.0.1.evil.example/console/",
                "https://localhost@evil.example/console/", "javascript:alert(1)", "file:///console/"):
        assert not redirect_allowed(console, uri), uri
    gcloud = find_client(GCLOUD_CLIENT_ID)
    assert gcloud is not None and not redirect_allowed(gcloud, "https://127.0.0.1:8443/")


def test_the_sign_in_page_names_the_console(client: TestClient) -> None:
    r = client.get("/o/oauth2/auth", params={
        "client_id": CONSOLE_CLIENT_ID, "redirect_uri": "http://127.0.0.1:8093/console/", "response_type": "code",
        "scope": "openid email https://www.googleapis.com/auth/cloud-platform", "state": "s",
        "code_challenge": "A" * 43, "code_challenge_method": "S256"})
    assert r.status_code == 200, r.text
    assert "the keyless console" in r.text
