"""An HTTP CONNECT proxy. For served hosts it terminates TLS with a certificate from the local CA and relays
the decrypted HTTP/1.1 stream (keep-alive included) to the keyless API listener; the Host header survives, so
the API sees which Google host was asked. Other hosts are tunnelled byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable

from keyless.proxy.hosts import is_served

log = logging.getLogger("keyless.proxy")
MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT = 10.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                  b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    await asyncio.gather(_pipe(a_reader, b_writer), _pipe(b_reader, a_writer))
    for w in (a_writer, b_writer):
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()


class InterceptionProxy:
    def __init__(self, api_host: str, api_port: int, tls: ssl.SSLContext,
                 universe_domains: Iterable[str] = (), *, upstream_tls: bool = False) -> None:
        self.api_host = api_host
        self.api_port = api_port
        self.tls = tls
        self.universe_domains = tuple(universe_domains)
        self.upstream_ssl: ssl.SSLContext | None = None
        if upstream_tls:
            # The upstream is this very process on loopback, presenting whatever certificate the operator gave.
            self.upstream_ssl = ssl.create_default_context()
            self.upstream_ssl.check_hostname = False
            self.upstream_ssl.verify_mode = ssl.CERT_NONE

    async def _open_api(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.api_host, self.api_port, ssl=self.upstream_ssl)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handle(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, OSError):
            pass
        except Exception as exc:  # never let one connection take the listener down
            log.warning("proxy connection failed: %s", type(exc).__name__)
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            await self._reply(writer, 431, "Request Header Fields Too Large")
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            await self._reply(writer, 400, "Bad Request")
            return
        method, target, _version = parts
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host = host.strip("[]")
            if not host or not port_text.isdigit():
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

    async def _reply(self, writer: asyncio.StreamWriter, code: int, reason: str) -> None:
        writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()

    async def _intercept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await writer.start_tls(self.tls)
        api_reader, api_writer = await self._open_api()
        await _splice(reader, writer, api_reader, api_writer)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            await self._reply(writer, 502, "Bad Gateway")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice(reader, writer, up_reader, up_writer)

    async def _forward_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                             method: str, target: str) -> None:
        """``GET http://host/path`` (plain-HTTP proxying): served hosts are answered, others refused."""
        rest = target[len("http://"):]
        host, slash, path = rest.partition("/")
        if not is_served(host.split(":")[0], self.universe_domains):
            await self._reply(writer, 502, "Bad Gateway")
            return
        first, _, remainder = head.partition(b"\r\n")
        rewritten = f"{method} /{path if slash else ''} {first.decode('latin-1').rsplit(' ', 1)[1]}".encode()
        api_reader, api_writer = await self._open_api()
        api_writer.write(rewritten + b"\r\n" + remainder)
        await api_writer.drain()
        await _splice(reader, writer, api_reader, api_writer)
