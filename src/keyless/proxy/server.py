"""An HTTP CONNECT proxy. For served hosts it terminates TLS with a certificate from the local CA and relays
the decrypted HTTP/1.1 stream (keep-alive included) to the keyless API listener; the Host header survives, so
the API sees which Google host was asked. A client that negotiates HTTP/2 there (ALPN ``h2``: a gRPC client) is
relayed byte for byte to the gRPC listener instead. Other hosts are tunnelled byte for byte, except where
``keyless.proxy.destinations`` refuses them.

Every connection gets a deadline for its request head, tunnels close when idle in both directions, and the
number of open connections is capped. A proxy listening off loopback asks for a password (Basic proxy
authentication) before it does anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, replace

from keyless.proxy.destinations import TunnelRules
from keyless.proxy.hosts import is_served

log = logging.getLogger("keyless.proxy")
MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT = 10.0
REALM = "keyless"
# The ALPN protocols of intercepted TLS, in the proxy's order of preference (OpenSSL picks the first of these that
# the client offers). A client that speaks HTTP/1.1 gets it and reaches REST even when it offers h2 as well (curl,
# Go's net/http): the REST listener speaks HTTP/1.1 only. A client that offers h2 alone is a gRPC client (grpc core,
# grpc-js, grpc-go and grpc-java offer nothing else) and is relayed to the gRPC listener.
INTERCEPT_ALPN = ("http/1.1", "h2")


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    header_timeout: float = 10.0  # seconds for the request head (and the TLS handshake of an intercepted host)
    idle_timeout: float = 300.0  # a tunnel with no bytes either way for this long is closed
    max_connections: int = 1000


class _Activity:
    """When a tunnel last carried a byte, in either direction."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()

    def touch(self) -> None:
        self.last = self.loop.time()

    def idle_for(self) -> float:
        return self.loop.time() - self.last


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: _Activity,
                idle_timeout: float) -> None:
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), idle_timeout)
            except TimeoutError:
                if activity.idle_for() >= idle_timeout:
                    return  # quiet both ways: the finally of _splice closes both ends
                continue
            if not data:
                break
            activity.touch()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                  b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter, idle_timeout: float) -> None:
    activity = _Activity()
    try:
        first = asyncio.ensure_future(_pipe(a_reader, b_writer, activity, idle_timeout))
        second = asyncio.ensure_future(_pipe(b_reader, a_writer, activity, idle_timeout))
        _done, pending = await asyncio.wait((first, second), return_when=asyncio.FIRST_COMPLETED)
        if activity.idle_for() >= idle_timeout:
            for task in pending:  # an idle tunnel: do not wait for the other side's half-close
                task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
    finally:
        for w in (a_writer, b_writer):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


def _own_listener_tls(alpn: list[str]) -> ssl.SSLContext:
    """TLS to one of this process's own listeners, which present whatever certificate the operator gave."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    return ctx


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def basic_password(value: bytes | None) -> bytes | None:
    """The password of a ``Basic`` Proxy-Authorization header (any user name), or None."""
    if value is None:
        return None
    scheme, _, encoded = value.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _user, sep, password = decoded.partition(b":")
    return password if sep else None


class InterceptionProxy:
    def __init__(self, api_host: str, api_port: int, tls: ssl.SSLContext,
                 universe_domains: Iterable[str] = (), *, upstream_tls: bool = False,
                 rules: TunnelRules | None = None, password: str | None = None,
                 limits: ProxyLimits | None = None) -> None:
        self.api_host = api_host
        self.api_port = api_port
        self.tls = tls
        self.universe_domains = tuple(universe_domains)
        self.rules = rules or TunnelRules(frozenset({api_port}))
        self.password = password.encode() if password is not None else None
        self.limits = limits or ProxyLimits()
        self.open_connections = 0
        self.upstream_ssl = _own_listener_tls(["http/1.1"]) if upstream_tls else None
        # The gRPC listener that h2 connections are relayed to; until it is known (it starts after the proxy), an
        # h2 connection is closed after its handshake.
        self.grpc_address: tuple[str, int] | None = None
        self.grpc_ssl: ssl.SSLContext | None = None

    def relay_grpc_to(self, host: str, port: int, *, tls: bool = False) -> None:
        """Relay intercepted h2 connections to the gRPC listener at ``host:port``; that port joins keyless's own
        listeners, which no tunnel may reach."""
        self.grpc_address = (host, port)
        self.grpc_ssl = _own_listener_tls(["h2"]) if tls else None
        self.rules = replace(self.rules, own_ports=self.rules.own_ports | {port})

    async def _open_api(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.api_host, self.api_port, ssl=self.upstream_ssl)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.limits.max_connections:
            with contextlib.suppress(Exception):
                await self._reply(writer, 503, "Service Unavailable", "too many open connections to the proxy")
            writer.close()
            return
        self.open_connections += 1
        try:
            await self._handle(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, OSError,
                TimeoutError):
            pass
        except Exception as exc:  # never let one connection take the listener down
            log.warning("proxy connection failed: %s", type(exc).__name__)
        finally:
            self.open_connections -= 1
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.header_timeout)
        except TimeoutError:
            await self._reply(writer, 408, "Request Timeout", "the request head did not arrive in time")
            return
        if len(head) > MAX_HEAD:
            await self._reply(writer, 431, "Request Header Fields Too Large")
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            await self._reply(writer, 400, "Bad Request")
            return
        if self.password is not None and not self._authenticated(head):
            await self._reply(writer, 407, "Proxy Authentication Required", "this proxy needs a password",
                              extra=f'Proxy-Authenticate: Basic realm="{REALM}"\r\n')
            return
        method, target, _version = parts
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host = host.strip("[]")
            if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
                await self._reply(writer, 400, "Bad Request")
                return
            if is_served(host, self.universe_domains):
                await self._intercept(reader, writer)
            else:
                await self._tunnel(reader, writer, host, int(port_text))
            return
        if target.startswith("http://"):
            await self._forward_plain(reader, writer, head, method, target)
            return
        await self._reply(writer, 400, "Bad Request")

    def _authenticated(self, head: bytes) -> bool:
        assert self.password is not None
        given = basic_password(_header(head, b"proxy-authorization"))
        return given is not None and hmac.compare_digest(given, self.password)

    async def _reply(self, writer: asyncio.StreamWriter, code: int, reason: str, text: str = "",
                     *, extra: str = "") -> None:
        body = (text + "\n").encode() if text else b""
        writer.write(f"HTTP/1.1 {code} {reason}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    async def _refuse(self, writer: asyncio.StreamWriter, why: str) -> None:
        log.info("proxy refused: %s", why)
        await self._reply(writer, 403, "Forbidden", f"keyless proxy refuses this destination: {why}")

    async def _intercept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await writer.start_tls(self.tls, ssl_handshake_timeout=self.limits.header_timeout)
        tls = writer.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() == "h2":
            # gRPC: the decrypted HTTP/2 stream goes to the gRPC listener as it is (a gRPC server takes h2 with
            # prior knowledge); the :authority it carries names the Google host, as the Host header does for REST.
            if self.grpc_address is None:
                return
            up_reader, up_writer = await asyncio.open_connection(*self.grpc_address, ssl=self.grpc_ssl)
        else:
            up_reader, up_writer = await self._open_api()
        await _splice(reader, writer, up_reader, up_writer, self.limits.idle_timeout)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT)
        except (OSError, TimeoutError, UnicodeError):
            await self._reply(writer, 502, "Bad Gateway", f"cannot resolve {host}")
            return
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        why = self.rules.first_refusal(addresses, port)
        if why is not None:
            await self._refuse(writer, why)
            return
        # Connect to the addresses checked, not to the name again: a second lookup could answer differently.
        for address in addresses:
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(address, port),
                                                              CONNECT_TIMEOUT)
                break
            except (OSError, TimeoutError):
                continue
        else:
            await self._reply(writer, 502, "Bad Gateway", f"cannot connect to {host}:{port}")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice(reader, writer, up_reader, up_writer, self.limits.idle_timeout)

    async def _forward_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                             method: str, target: str) -> None:
        """``GET http://host/path`` (plain-HTTP proxying): served hosts are answered, others refused."""
        rest = target[len("http://"):]
        host, slash, path = rest.partition("/")
        if not is_served(host.split(":")[0], self.universe_domains):
            await self._refuse(writer, "plain HTTP is proxied only for the Google hosts keyless serves")
            return
        first, _, remainder = head.partition(b"\r\n")
        # The proxy's password is for the proxy: the API never sees it.
        remainder = b"\r\n".join(line for line in remainder.split(b"\r\n")
                                  if not line.lower().startswith(b"proxy-authorization:"))
        rewritten = f"{method} /{path if slash else ''} {first.decode('latin-1').rsplit(' ', 1)[1]}".encode()
        api_reader, api_writer = await self._open_api()
        api_writer.write(rewritten + b"\r\n" + remainder)
        await api_writer.drain()
        await _splice(reader, writer, api_reader, api_writer, self.limits.idle_timeout)
