"""Idle and half-sent connections are closed on every listener (API, metadata, proxy); open connections are
capped. Each bound is a ``keyless serve`` option: short ones here, so a connection the server drops shows up
as end-of-file well within the client's own 10-second timeout."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import Server, start_server


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def _closed_by_server(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a client timeout fails the test)."""
    conn.settimeout(10)
    received = b""
    while chunk := conn.recv(4096):
        received += chunk
    return received


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("strict") / "data", "--proxy-port", "0", "--metadata-port", "0",
                       "--header-timeout", "0.5", "--body-timeout", "0.5", "--keep-alive-timeout", "0.5",
                       "--tunnel-idle-timeout", "0.5")
    yield srv
    srv.stop()


def _listeners(srv: Server) -> dict[str, int]:
    endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
    return {name: _port(endpoints[name]) for name in ("api", "metadata", "proxy")}


@pytest.mark.parametrize("listener", ["api", "metadata", "proxy"])
def test_a_connection_that_sends_nothing_is_closed(strict: Server, listener: str) -> None:
    with socket.create_connection(("127.0.0.1", _listeners(strict)[listener])) as conn:
        _closed_by_server(conn)


@pytest.mark.parametrize("listener", ["api", "metadata", "proxy"])
def test_a_half_sent_head_is_closed(strict: Server, listener: str) -> None:
    with socket.create_connection(("127.0.0.1", _listeners(strict)[listener])) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: slow")
        assert b"200" not in _closed_by_server(conn)


def test_a_half_sent_body_is_closed(strict: Server) -> None:
    with socket.create_connection(("127.0.0.1", _listeners(strict)["api"])) as conn:
        conn.sendall(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 100\r\n\r\ngrant_type=")
        _closed_by_server(conn)


def test_the_next_request_on_a_kept_alive_connection_has_a_deadline_too(strict: Server) -> None:
    with socket.create_connection(("127.0.0.1", _listeners(strict)["api"])) as conn:
        conn.sendall(b"GET /oauth2/v1/certs HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(10)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET /oauth2/v1/certs HTTP/1.1\r\nHo")
        _closed_by_server(conn)


def test_an_idle_kept_alive_connection_is_closed(strict: Server) -> None:
    with socket.create_connection(("127.0.0.1", _listeners(strict)["api"])) as conn:
        conn.sendall(b"GET /oauth2/v1/certs HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_by_server(conn).startswith(b"HTTP/1.1 200")


def test_an_idle_tunnel_is_closed(strict: Server) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(("127.0.0.1", _listeners(strict)["proxy"])) as conn:
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        conn.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        upstream, _ = listener.accept()
        with upstream:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            conn.sendall(b"ping")
            upstream.settimeout(10)
            assert upstream.recv(4) == b"ping"
            _closed_by_server(conn)


def test_open_connections_are_capped(tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = start_server(tmp_path_factory.mktemp("capped") / "data", "--proxy-port", "-1", "--metadata-port", "-1",
                       "--max-connections", "3")
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            conn = socket.create_connection(("127.0.0.1", _port(srv.url)), timeout=10)
            conn.sendall(b"GET /oauth2/v1/certs HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")  # accepted and counted
            held.append(conn)
        with socket.create_connection(("127.0.0.1", _port(srv.url)), timeout=10) as extra:
            reply = _closed_by_server(extra)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert json.loads(body)["error"]["status"] == "UNAVAILABLE"
    finally:
        for conn in held:
            conn.close()
        srv.stop()
