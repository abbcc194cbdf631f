"""The gRPC server of one process: every service keyless answers over gRPC, bound to one port, with the limits
of the runtime (message size, concurrent calls)."""

from __future__ import annotations

import grpc

from keyless.errors import BindFailed
from keyless.grpc import admin, credentials, projects
from keyless.service.app import Keyless
from keyless.service.limits import Limits


def build_server(keyless: Keyless, limits: Limits) -> grpc.aio.Server:
    """A gRPC server (not yet bound or started) answering the services over ``keyless``."""
    server = grpc.aio.server(
        handlers=[*credentials.handlers(keyless), *admin.handlers(keyless), *projects.handlers(keyless)],
        maximum_concurrent_rpcs=limits.max_connections,  # beyond: RESOURCE_EXHAUSTED, as REST's cap answers 503
        options=[
            # The request size limit of REST's bodies; larger messages are refused by grpcio (RESOURCE_EXHAUSTED).
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            # One server per port: grpcio's default (SO_REUSEPORT) would let a second keyless share it silently.
            ("grpc.so_reuseport", 0),
        ])
    return server


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
