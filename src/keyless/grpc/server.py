"""The gRPC server of one process: every service keyless answers over gRPC, bound to one port, with the limits
of the runtime: message and metadata size, concurrent calls, and REST's connection deadlines (a connection that does
not finish its handshake within ``--header-timeout``, one without calls for ``--keep-alive-timeout``; a call's
message must arrive within ``--body-timeout``, see ``keyless.grpc.calls``)."""

from __future__ import annotations

import logging

import grpc

from keyless.errors import BindFailed
from keyless.grpc import admin, credentials, projects, sts
from keyless.service.app import Keyless
from keyless.service.limits import Limits


class _NoMetadataValues(logging.Filter):
    """grpcio logs a metadata value that is not UTF-8 whole, with a traceback, before decoding it as Latin-1 (the
    handler then refuses it): an ``authorization`` value is a credential, and the log is no place for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Invalid encoding on")


_NO_METADATA_VALUES = _NoMetadataValues()


def build_server(keyless: Keyless, limits: Limits, *, shared_port: bool = False) -> grpc.aio.Server:
    """A gRPC server (not yet bound or started) answering the services over ``keyless``; with ``shared_port`` one
    of the processes of ``--workers N`` that all serve the one port (SO_REUSEPORT)."""
    logging.getLogger("grpc._cython.cygrpc").addFilter(_NO_METADATA_VALUES)  # once: the same filter is kept once
    server = grpc.aio.server(
        handlers=[*credentials.handlers(keyless), *admin.handlers(keyless), *projects.handlers(keyless),
                  *sts.handlers(keyless)],
        maximum_concurrent_rpcs=limits.max_connections,  # beyond: RESOURCE_EXHAUSTED, as REST's cap answers 503
        options=[
            # The request size limit of REST's bodies; larger messages are refused by grpcio (RESOURCE_EXHAUSTED).
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            # REST's limit on a request's head, for a call's metadata (grpcio's default: 8 KiB, refusing calls
            # at random between that and 16 KiB): over it the call is refused with RESOURCE_EXHAUSTED.
            ("grpc.max_metadata_size", limits.max_header_bytes),
            ("grpc.absolute_max_metadata_size", limits.max_header_bytes),
            # A connection that does not finish its (TLS and HTTP/2) handshake in time is closed, as REST's
            # connections that do not send a request head (grpcio's default: 120 s).
            ("grpc.server_handshake_timeout_ms", _ms(limits.header_timeout)),
            # A connection without calls is sent GOAWAY and closed, as REST's idle kept-alive connections: clients
            # reconnect on their next call (grpcio's default: never).
            ("grpc.max_connection_idle_ms", _ms(limits.keep_alive_timeout)),
            # One server per port: grpcio's default (SO_REUSEPORT) would let a second keyless share it silently.
            # The processes of one server share it (the supervisor checked it was free and holds it for them).
            ("grpc.so_reuseport", 1 if shared_port else 0),
        ])
    return server


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def bind(server: grpc.aio.Server, host: str, port: int, *, tls: tuple[bytes, bytes] | None = None) -> int:
    """Bind ``server`` to ``host:port`` (plaintext, or TLS with ``(key PEM, certificate PEM)``); the bound port.
    Raises BindFailed (an OSError) when the address cannot be bound."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
    except RuntimeError as exc:  # grpcio's "Failed to bind to address"
        raise BindFailed(str(exc)) from None
    if bound == 0:  # older grpcio answers 0 instead of raising
        raise BindFailed(f"Failed to bind to address {address}")
    return int(bound)
