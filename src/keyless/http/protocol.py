"""The HTTP/1.1 connection protocol of every uvicorn listener (API, metadata, universe): uvicorn's httptools
protocol with deadlines for reading a request and a cap on open connections.

uvicorn times out a kept-alive connection between requests, but not one that never finishes sending a
request: a client that opens connections and sends nothing, or a header byte every few seconds, would hold
them forever (slowloris). Here a request's head must arrive within ``header_timeout`` of the connection
opening (or of the request's first byte on a kept-alive connection), and its body within ``body_timeout`` of
the head; otherwise the connection is closed. Connections beyond ``max_connections`` are answered 503 and
closed at once.

The mTLS listener's protocol (``ClientCertHttpProtocol``) also puts the client certificate of the connection's
TLS handshake into each request's scope, as the ASGI TLS extension does (``scope["extensions"]["tls"]
["client_cert_chain"]``): the only way a certificate reaches the application, never a header.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TOO_MANY = b'{"error":{"code":503,"message":"Too many open connections; retry later.","status":"UNAVAILABLE"}}'
SERVICE_UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(_TOO_MANY), _TOO_MANY))


class GuardedHttpProtocol(HttpToolsProtocol):
    """Set by ``guarded_protocol``: the limits of one listener."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            transport.write(SERVICE_UNAVAILABLE)
            transport.close()
            return
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is None:  # refused in connection_made: uvicorn never saw it
            return
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        if self._read_deadline is None:  # the next request on a kept-alive connection: its head has a deadline
            self._arm(self.header_timeout)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class ClientCertHttpProtocol(GuardedHttpProtocol):
    """The mTLS listener's: each request's scope carries the ASGI TLS extension with the certificate the client
    presented in the handshake (its key proven there), PEM, or none."""

    _tls: dict[str, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self._tls = {"server_cert": None, "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                     "client_cert_name": None, "client_cert_error": None, "tls_version": None, "cipher_suite": None}

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {**self.scope.get("extensions", {}), "tls": self._tls}  # type: ignore[dict-item]


def guarded_protocol(header_timeout: float, body_timeout: float, max_connections: int, *,
                     client_certificates: bool = False) -> type[GuardedHttpProtocol]:
    """The protocol class of a listener with these limits (uvicorn builds one instance per connection); with
    ``client_certificates``, the mTLS listener's."""
    base = ClientCertHttpProtocol if client_certificates else GuardedHttpProtocol
    return type(base.__name__, (base,), {
        "header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections})
