"""The access log (``--access-log``) never holds a secret sent in a query string, however its name is spelled.

The server reads parameter names percent- and '+'-decoded (``acc%65ss_token`` is ``access_token``), so the
redaction must compare them decoded too, and case-insensitively."""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from keyless.http.guards import redact_query
from tests.conftest import Server, start_server
from tests.security.support import LogWatch


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("access-log") / "data", "--access-log")
    yield srv
    srv.stop()


def raw_get(srv: Server, target: str) -> tuple[int, str]:
    """GET ``target`` exactly as written (no client re-encoding of the query string)."""
    parts = urlsplit(srv.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def logged_text(srv: Server, watch: LogWatch) -> str:
    """The log written since ``watch`` was made, up to and including the line of the last request answered.

    A request's line is written right after its last byte is sent, with no pause in between, so by the time the
    server answers a further request (here ``/healthz``) it is in the file."""
    assert raw_get(srv, "/healthz")[0] == 200
    return watch.new_text()


@pytest.mark.parametrize("name", ["acc%65ss_token", "access%5Ftoken", "%61%63%63%65%73%73%5F%74%6F%6B%65%6E",
                                  "ACCESS_TOKEN", "Acc%45ss_Token"])
def test_an_encoded_token_name_is_redacted(logged: Server, name: str) -> None:
    token = logged.owner_token
    watch = LogWatch(logged.data_dir / "server.log")
    status, body = raw_get(logged, f"/oauth2/v3/tokeninfo?{name}={token}")
    if name.lower().startswith("acc%65") or "%5f" in name.lower() or name.startswith("%61"):
        # The server reads the decoded name: the token was really used, so it really was sent.
        assert status == 200 and json.loads(body)["email"] == "owner@keyless.local", body
    text = logged_text(logged, watch)
    assert f"/oauth2/v3/tokeninfo?{name}=REDACTED" in text, text
    assert token not in text and token[5:40] not in text, text


@pytest.mark.parametrize("name", ["client%5Fsecret", "refresh%5ftoken", "id_%74oken", "%61ssertion", "t%6Fken",
                                  "k%65y"])
def test_every_secret_parameter_is_redacted_by_its_decoded_name(logged: Server, name: str) -> None:
    secret = f"s3cr3t-{secrets.token_hex(16)}"
    watch = LogWatch(logged.data_dir / "server.log")
    raw_get(logged, f"/token?grant_type=refresh_token&{name}={secret}&client_id=abc")
    text = logged_text(logged, watch)
    assert f"?grant_type=refresh_token&{name}=REDACTED&client_id=abc" in text, text
    assert secret not in text, text


def test_redaction_rules() -> None:
    assert redact_query("acc%65ss_token=x&a=1") == "acc%65ss_token=REDACTED&a=1"
    assert redact_query("a=1&ACCESS%5FTOKEN=x") == "a=1&ACCESS%5FTOKEN=REDACTED"
    assert redact_query("access_token") == "access_token"  # a name alone carries nothing
    assert redact_query("access_token=") == "access_token=REDACTED"
    assert redact_query("tokens=x&my_key=y&keyring=z") == "tokens=x&my_key=y&keyring=z"
    assert redact_query("key=%41b&key=cd") == "key=REDACTED&key=REDACTED"
    assert redact_query("a+b=1&c%20d=2") == "a+b=1&c%20d=2"

