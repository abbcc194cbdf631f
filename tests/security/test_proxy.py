"""The interception proxy is not a relay: never to keyless's own listeners or link-local addresses; on
loopback unless told otherwise; off loopback only with a password and only to public addresses. HTTP/2 (gRPC)
reaches keyless's gRPC listener only as the decrypted stream of a host the proxy intercepts, under the same
rules."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests

from tests.conftest import KEYLESS, Server, start_server


def _endpoints(srv: Server) -> dict[str, str]:
    return dict(json.loads((srv.data_dir / "endpoints.json").read_text()))


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def _connect(proxy_url: str, target: str, *, auth: str | None = None, host: str | None = None) -> tuple[bytes,
                                                                                                       socket.socket]:
    """Send ``CONNECT target`` to the proxy; the reply's head and body (up to 4 KiB) and the open socket."""
    proxy_host = host or proxy_url.removeprefix("http://").rsplit(":", 1)[0]
    conn = socket.create_connection((proxy_host, _port(proxy_url)), timeout=10)
    extra = f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n" if auth else ""
    conn.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode())
    reply = conn.recv(4096)
    return reply, conn


def _refused(reply: bytes) -> str:
    """The one-line reason of a 403 refusal."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403"), reply
    lines = body.decode().strip().splitlines()
    assert len(lines) == 1, body
    return lines[0]


def _send_after_refusal(conn: socket.socket) -> bytes:
    """What comes back for a metadata token request sent down a refused tunnel: nothing, or a reset."""
    try:
        conn.sendall(b"GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\n"
                     b"Host: metadata\r\nMetadata-Flavor: Google\r\n\r\n")
        return conn.recv(4096)
    except ConnectionError:  # the proxy had closed: the kernel answers the late bytes with a reset
        return b""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("proxy") / "data", "--proxy-port", "0", "--metadata-port", "0")
    yield srv
    srv.stop()


def test_proxy_refuses_keyless_own_listeners(local: Server) -> None:
    endpoints = _endpoints(local)
    attached = local.create_sa("relay-target")
    local.owner("PUT", "/keyless/v1/metadata", {"serviceAccount": attached})
    for listener in ("metadata", "api", "proxy", "grpc"):  # grpc: started with the proxy, on loopback
        port = _port(endpoints[listener])
        for host in ("127.0.0.1", "localhost", "0.0.0.0", "[::ffff:127.0.0.1]"):
            reply, conn = _connect(endpoints["proxy"], f"{host}:{port}")
            with conn:
                reason = _refused(reply)
                assert f":{port} is one of keyless's own listeners" in reason, reason
                # The refusal ends the connection: nothing sent after it reaches the metadata server.
                assert b"access_token" not in _send_after_refusal(conn)


def test_proxy_refuses_link_local_destinations(local: Server) -> None:
    proxy = _endpoints(local)["proxy"]
    for target in ("169.254.169.254:80", "[fe80::1]:80", "[::ffff:169.254.169.254]:80"):
        reply, conn = _connect(proxy, target)
        conn.close()
        assert "link-local" in _refused(reply), target


def test_plain_http_proxying_is_refused_for_other_hosts(local: Server) -> None:
    proxy = _endpoints(local)["proxy"]
    with socket.create_connection(("127.0.0.1", _port(proxy)), timeout=10) as conn:
        conn.sendall(b"GET http://169.254.169.254/computeMetadata/v1/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
        assert "only for the Google hosts keyless serves" in _refused(conn.recv(4096))


def test_proxy_listens_on_loopback_whatever_host_says(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--host", "0.0.0.0", "--insecure", "--proxy-port", "0")
    try:
        endpoints = _endpoints(srv)
        assert endpoints["proxy"].startswith("http://127.0.0.1:")
        assert "proxyPasswordFile" not in endpoints
        # A socket bound to 127.0.0.1 is not reachable at 127.0.0.2; the API, bound to every address, is.
        with socket.create_connection(("127.0.0.2", _port(endpoints["api"])), timeout=10):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", _port(endpoints["proxy"])), timeout=10)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("public-proxy") / "data", "--proxy-port", "0",
                       "--proxy-host", "0.0.0.0")
    yield srv
    srv.stop()


def _password(srv: Server) -> str:
    path = Path(_endpoints(srv)["proxyPasswordFile"])
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


def test_public_proxy_requires_its_password(public: Server) -> None:
    proxy = _endpoints(public)["proxy"]
    for auth in (None, "keyless:wrong", "keyless:"):
        reply, conn = _connect(proxy, "www.googleapis.com:443", auth=auth, host="127.0.0.2")
        conn.close()
        assert reply.startswith(b"HTTP/1.1 407"), reply
        assert b'Proxy-Authenticate: Basic realm="keyless"' in reply
    reply, conn = _connect(proxy, "www.googleapis.com:443", auth=f"anyone:{_password(public)}", host="127.0.0.2")
    conn.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply


def test_public_proxy_tunnels_to_public_addresses_only(public: Server) -> None:
    proxy = _endpoints(public)["proxy"]
    auth = f"keyless:{_password(public)}"
    refused = {"127.0.0.1:22": "this machine", "localhost:8080": "this machine", "10.1.2.3:443": "not a public",
               "192.168.1.1:443": "not a public", "[fd00::1]:443": "not a public", "100.64.0.1:80": "not a public",
               "169.254.169.254:80": "link-local"}
    for target, why in refused.items():
        reply, conn = _connect(proxy, target, auth=auth, host="127.0.0.2")
        conn.close()
        assert why in _refused(reply), target


def test_keyless_env_gives_clients_the_public_proxy_password(public: Server) -> None:
    env = subprocess.run([*KEYLESS, "env", "--shell", "dotenv"], capture_output=True, text=True, check=True,
                         env=public.env(), timeout=60).stdout
    proxy = dict(line.split("=", 1) for line in env.splitlines())["HTTPS_PROXY"]
    assert proxy.startswith(f"http://keyless:{_password(public)}@")
    ca = _endpoints(public)["caBundle"]
    r = requests.get("https://oauth2.googleapis.com/oauth2/v1/certs", proxies={"https": proxy}, verify=ca, timeout=10)
    assert r.status_code == 200 and r.json()


def test_intercepted_tls_handshake_has_a_deadline(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--proxy-port", "0", "--header-timeout", "0.5")
    try:
        reply, conn = _connect(_endpoints(srv)["proxy"], "www.googleapis.com:443")
        with conn:
            assert reply.startswith(b"HTTP/1.1 200")
            # No ClientHello: the proxy gives up on the handshake and closes the connection.
            assert conn.recv(4096) == b""
        reply, conn = _connect(_endpoints(srv)["proxy"], "www.googleapis.com:443")
        with conn:
            context = ssl.create_default_context(cafile=_endpoints(srv)["caBundle"])
            with context.wrap_socket(conn, server_hostname="www.googleapis.com") as tls:
                tls.sendall(b"GET /oauth2/v1/certs HTTP/1.1\r\nHost: www.googleapis.com\r\nConnection: close\r\n\r\n")
                assert tls.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        srv.stop()


# ---------------------------------------------------------------- HTTP/2 (gRPC) through the proxy

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SIGN_BLOB = "/google.iam.credentials.v1.IAMCredentials/SignBlob"


def _intercepted_tls(srv: Server, alpn: list[str], host: str = "iamcredentials.googleapis.com") -> ssl.SSLSocket:
    reply, conn = _connect(_endpoints(srv)["proxy"], f"{host}:443")
    assert reply.startswith(b"HTTP/1.1 200"), reply
    context = ssl.create_default_context(cafile=_endpoints(srv)["caBundle"])
    context.set_alpn_protocols(alpn)
    return context.wrap_socket(conn, server_hostname=host)


def test_clients_that_speak_http1_get_rest_and_h2_only_clients_get_grpc(local: Server) -> None:
    # curl and Go's net/http offer h2 and HTTP/1.1: the proxy prefers HTTP/1.1, so they keep reaching REST.
    with _intercepted_tls(local, ["h2", "http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET /oauth2/v1/certs HTTP/1.1\r\nHost: www.googleapis.com\r\nConnection: close\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
    # A gRPC client offers h2 alone: the decrypted stream reaches an HTTP/2 server (its SETTINGS frame answers).
    with _intercepted_tls(local, ["h2"]) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        tls.sendall(H2_PREFACE + H2_EMPTY_SETTINGS)
        frame = tls.recv(9)
        assert len(frame) == 9 and frame[3] == 0x04, frame  # type SETTINGS


def test_h2_to_a_host_keyless_does_not_serve_is_never_intercepted(local: Server) -> None:
    """Another host's TLS (ALPN h2 included) is tunnelled as it is, to that host: the bytes that arrive there are
    the client's own ClientHello, never keyless's certificate or its gRPC listener."""
    with socket.create_server(("127.0.0.1", 0)) as elsewhere:
        received: list[bytes] = []

        def accept() -> None:
            peer, _ = elsewhere.accept()
            with peer:
                received.append(peer.recv(5))

        thread = threading.Thread(target=accept)
        thread.start()
        reply, conn = _connect(_endpoints(local)["proxy"], f"localhost:{elsewhere.getsockname()[1]}")
        with conn:
            assert reply.startswith(b"HTTP/1.1 200"), reply
            context = ssl.create_default_context(cafile=_endpoints(local)["caBundle"])
            context.set_alpn_protocols(["h2"])
            with pytest.raises((ssl.SSLError, OSError)):  # nobody there answers TLS, least of all keyless
                context.wrap_socket(conn, server_hostname="localhost")
        thread.join(10)
    assert received and received[0][:1] == b"\x16", received  # a TLS handshake record, relayed untouched


def _grpc_call_through(srv: Server, proxy_url: str) -> grpc.RpcError:
    """SignBlob with no credentials, to Google's host through ``proxy_url``: the error it ends with."""
    roots = Path(_endpoints(srv)["caBundle"]).read_bytes()
    with grpc.secure_channel("iamcredentials.googleapis.com:443", grpc.ssl_channel_credentials(roots),
                             options=[("grpc.http_proxy", proxy_url), ("grpc.enable_retries", 0)]) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(SIGN_BLOB)(b"", timeout=20)
    return raised.value  # type: ignore[return-value]


def test_grpc_through_the_local_proxy_reaches_keyless(local: Server) -> None:
    error = _grpc_call_through(local, _endpoints(local)["proxy"])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error  # keyless's answer: no credentials


def test_grpc_through_a_public_proxy_needs_its_password(public: Server) -> None:
    port = _port(_endpoints(public)["proxy"])
    for auth in ("", "keyless:wrong@"):
        error = _grpc_call_through(public, f"http://{auth}127.0.0.2:{port}")
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # the proxy answered 407: no tunnel at all
    error = _grpc_call_through(public, f"http://keyless:{_password(public)}@127.0.0.2:{port}")
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error


def test_grpc_through_the_proxy_to_a_tls_grpc_listener(tmp_path: Path) -> None:
    """With --tls-cert and --grpc-port the listener speaks TLS: the proxy's relay speaks TLS (ALPN h2) to it."""
    from keyless.crypto.ca import LocalCA

    ca = LocalCA(tmp_path / "ca")
    ca.ensure()
    cert, key = ca.issue("api", ["127.0.0.1", "localhost"])
    srv = start_server(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key), "--grpc-port", "0",
                       "--proxy-port", "0", "--metadata-port", "-1")
    try:
        error = _grpc_call_through(srv, _endpoints(srv)["proxy"])
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
    finally:
        srv.stop()
