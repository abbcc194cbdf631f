"""The sockets and servers of each port: the API (in every process), and in the supervisor the metadata server, the
universe-domain listener (TLS), the interception proxy with the local CA that certifies it, and the gRPC listener
(which the proxy relays HTTP/2 to)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import uvicorn
from starlette.types import ASGIApp

from keyless.crypto.ca import LocalCA, server_context, system_ca_bundle
from keyless.grpc.server import bind as bind_grpc
from keyless.grpc.server import build_server as build_grpc_server
from keyless.http.protocol import guarded_protocol
from keyless.metadata.app import build_metadata_app
from keyless.private_files import write_private
from keyless.proxy.destinations import TunnelRules
from keyless.proxy.hosts import served_hosts
from keyless.proxy.server import INTERCEPT_ALPN, MAX_HEAD, InterceptionProxy, ProxyLimits
from keyless.server.mtls import ClientCertificateGate
from keyless.server.options import ServeOptions, is_loopback, is_wildcard, side_port
from keyless.server.runtime import GrpcListen, Runtime, url_of
from keyless.service.app import Keyless

PROXY_PASSWORD = "proxy.password"
MTLS_HOSTS = ("sts.mtls.googleapis.com", "iamcredentials.mtls.googleapis.com")


class ListenerError(SystemExit):
    """A listener could not start: one line naming it, its address and the option that changes it."""


def bind_listener(name: str, option: str, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    try:
        return bind_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        raise listener_error(name, option, host, port, (exc.strerror or type(exc).__name__).lower()) from None


def listener_error(name: str, option: str, host: str, port: int, reason: str) -> ListenerError:
    free = "0 picks a free one" if option in ("--port", "--grpc-port") else "0 picks a free one, -1 turns it off"
    return ListenerError(f"keyless serve: the {name} cannot listen on {url_of(host, port)[7:]}: {reason}. "
                         f"Choose another port with {option} ({free}).")


def bind_api(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    return bind_listener("API", "--port", host, port, reuse_port=reuse_port)


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # One socket per worker process: the kernel spreads connections evenly (a shared accept socket
        # can leave every long-lived connection on one worker).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit this on Linux: a response written as headers then body must not wait
    # for the client's delayed ACK (40 ms per request otherwise).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after shutting down, which would skip our clean-up; we handle signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


class Listeners:
    """The uvicorn servers and raw listeners of one process, started and stopped together."""

    def __init__(self, runtime: Runtime) -> None:
        limits = runtime.limits
        self.log_level = runtime.log_level
        self.protocol = guarded_protocol(limits.header_timeout, limits.body_timeout, limits.max_connections)
        self.keep_alive_timeout = limits.keep_alive_timeout
        self.servers: list[_Server] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.raw: list[asyncio.Server] = []
        self.grpc: list[grpc.aio.Server] = []
        self.proxy: InterceptionProxy | None = None  # the interception proxy (supervisor only), once started
        self.background: list[asyncio.Task[None]] = []  # cancelled at stop
        self.limits = limits  # the mTLS listener builds its own protocol class with them

    def add_asgi(self, app: object, sock: socket.socket, *, certfile: Path | None = None,
                 keyfile: Path | None = None, client_certificates: ssl.SSLContext | None = None) -> None:
        """Serve ``app`` on ``sock``: over TLS with ``certfile``, or with the mTLS listener's context
        (``client_certificates``), whose protocol hands the client's certificate to the application."""
        protocol = self.protocol
        factory = None
        if client_certificates is not None:
            protocol = guarded_protocol(self.limits.header_timeout, self.limits.body_timeout,
                                        self.limits.max_connections, client_certificates=True)
            context = client_certificates
            factory = lambda config, default: context  # noqa: E731
        config = uvicorn.Config(app, log_level=self.log_level, access_log=False, lifespan="off",  # type: ignore[arg-type]
                                server_header=False, date_header=True, proxy_headers=False, http=protocol,
                                timeout_keep_alive=self.keep_alive_timeout,  # type: ignore[arg-type]
                                ssl_certfile=str(certfile) if certfile else None,
                                ssl_keyfile=str(keyfile) if keyfile else None, ssl_context_factory=factory)
        server = _Server(config)
        self.servers.append(server)
        self.tasks.append(asyncio.create_task(server.serve(sockets=[sock])))

    async def wait_started(self) -> bool:
        while not all(s.started for s in self.servers):
            if any(t.done() for t in self.tasks):
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        for server in self.servers:
            server.request_exit()
        for listener in self.raw:
            listener.close()
        for grpc_server in self.grpc:
            await grpc_server.stop(None)
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def raise_failures(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


def api_listeners(runtime: Runtime, app: ASGIApp, sock: socket.socket) -> Listeners:
    """A process's listeners, starting with the API on ``sock`` (TLS when the runtime has a certificate)."""
    listeners = Listeners(runtime)
    listeners.add_asgi(app, sock, certfile=runtime.tls_cert, keyfile=runtime.tls_key)
    return listeners


async def add_side_listeners(listeners: Listeners, options: ServeOptions, runtime: Runtime, keyless: Keyless,
                             app: ASGIApp) -> dict[str, object]:
    """The supervisor's other ports (metadata server, universe-domain listener, interception proxy) and the local
    CA behind the last two; returns what ``endpoints.json`` says about them."""
    endpoints: dict[str, object] = {}
    data_dir = runtime.data_dir
    universes = runtime.settings.universe_domains
    own_ports = {runtime.port}
    if options.mtls_port is not None:
        mtls_endpoints, mtls_port = await add_mtls_listener(listeners, options, runtime, keyless, app)
        endpoints.update(mtls_endpoints)
        own_ports.add(mtls_port)

    metadata_port = side_port(options.metadata_port, options.port, 2)
    if metadata_port >= 0:
        md_sock = bind_listener("metadata server", "--metadata-port", options.metadata_host, metadata_port)
        listeners.add_asgi(build_metadata_app(keyless), md_sock)
        own_ports.add(md_sock.getsockname()[1])
        endpoints["metadata"] = url_of(options.metadata_host, md_sock.getsockname()[1])

    proxy_port = side_port(options.proxy_port, options.port, 1)
    if proxy_port < 0 and not universes:
        return endpoints
    ca = LocalCA(data_dir / "tls")
    ca.ensure()
    bundle = data_dir / "ca-bundle.pem"
    bundle.write_bytes(system_ca_bundle().rstrip() + b"\n" + ca.cert_path.read_bytes())
    endpoints["caCert"] = str(ca.cert_path.resolve())
    endpoints["caBundle"] = str(bundle.resolve())
    leaf_cert, leaf_key = ca.issue("proxy-leaf", served_hosts(universes))
    if universes:
        cert, key = (options.universe_cert, options.universe_key)
        if cert is None or key is None:
            cert, key = ca.issue("universe-leaf", [h for d in universes for h in (d, f"*.{d}")])
        universe_sock = bind_listener("universe-domain listener", "--universe-port", options.host,
                                      side_port(options.universe_port, options.port, 3))
        listeners.add_asgi(app, universe_sock, certfile=cert, keyfile=key)
        own_ports.add(universe_sock.getsockname()[1])
        endpoints["universe"] = {"domains": list(universes),
                                 "url": url_of(runtime.api_host, universe_sock.getsockname()[1], tls=True)}
    if proxy_port >= 0:
        proxy_sock = bind_listener("interception proxy", "--proxy-port", options.proxy_host, proxy_port)
        own_ports.add(proxy_sock.getsockname()[1])
        public = not is_loopback(options.proxy_host)
        password = proxy_password(data_dir) if public else None
        limits = runtime.limits
        proxy = InterceptionProxy(runtime.api_host, runtime.port,
                                  server_context(leaf_cert, leaf_key, INTERCEPT_ALPN), universes,
                                  upstream_tls=runtime.api_tls, rules=TunnelRules(frozenset(own_ports), public=public),
                                  password=password, limits=ProxyLimits(
                                      header_timeout=limits.header_timeout,
                                      idle_timeout=limits.tunnel_idle_timeout,
                                      max_connections=limits.max_connections))
        listeners.raw.append(await asyncio.start_server(proxy.handle, sock=proxy_sock, limit=MAX_HEAD))
        listeners.proxy = proxy
        endpoints["proxy"] = url_of("127.0.0.1" if is_wildcard(options.proxy_host) else options.proxy_host,
                                    proxy_sock.getsockname()[1])
        if public:
            endpoints["proxyPasswordFile"] = str((data_dir / PROXY_PASSWORD).resolve())
    return endpoints


async def add_mtls_listener(listeners: Listeners, options: ServeOptions, runtime: Runtime, keyless: Keyless,
                            app: ASGIApp) -> tuple[dict[str, object], int]:
    """The mTLS listener (``--mtls-port``): the API over TLS, asking clients for a certificate under the X.509
    providers' CAs (``keyless.server.mtls``). Its certificate is the API's (``--tls-cert``) or, by default, one
    the local CA issues for the API's host, localhost and the ``*.mtls.googleapis.com`` hosts keyless serves."""
    assert options.mtls_port is not None
    cert, key = runtime.tls_cert, runtime.tls_key
    endpoints: dict[str, object] = {}
    if cert is None or key is None:
        ca = LocalCA(runtime.data_dir / "tls")
        ca.ensure()
        hosts = dict.fromkeys([runtime.api_host, "localhost", "127.0.0.1", *MTLS_HOSTS])
        cert, key = ca.issue("mtls-leaf", list(hosts))
        endpoints["caCert"] = str(ca.cert_path.resolve())
    gate = ClientCertificateGate(cert, key)
    await gate.refresh(keyless.store)
    keyless.federation.trust_added = gate.add
    listeners.background.append(asyncio.create_task(gate.keep_fresh(keyless.store)))
    sock = bind_listener("mTLS listener", "--mtls-port", options.host, options.mtls_port)
    listeners.add_asgi(app, sock, client_certificates=gate.context)
    port = sock.getsockname()[1]
    endpoints["mtls"] = url_of(runtime.api_host, port, tls=True)
    return endpoints, port


def grpc_listen(options: ServeOptions) -> GrpcListen | None:
    """Where the gRPC listener goes, or None when none runs: ``--grpc-port`` on the API's address, TLS when the API
    is; without it, when the interception proxy is on (it relays gRPC clients' h2 there), a free port on loopback,
    plaintext."""
    if options.grpc_port is None:
        if side_port(options.proxy_port, options.port, 1) < 0:
            return None
        host = options.host if is_loopback(options.host) else "127.0.0.1"  # reachable from this machine only
        return GrpcListen(host, host, 0, tls=False)
    api_host = "127.0.0.1" if is_wildcard(options.host) else options.host
    return GrpcListen(options.host, api_host, options.grpc_port, tls=options.tls_cert is not None)


def reserve_grpc_port(listen: GrpcListen, workers: int) -> tuple[GrpcListen, socket.socket | None]:
    """Check the gRPC port before anything starts, and with ``workers`` > 1 hold it for the processes of this server:
    a socket bound with SO_REUSEPORT (not listening, so it is given no connection) fixes the port every process then
    binds with SO_REUSEPORT too (the caller closes it when the server stops). Anything else asking for
    the port without SO_REUSEPORT, or as another user, is refused by the kernel; a second keyless is refused by the
    check here, made without SO_REUSEPORT."""
    if listen.port != 0:
        # grpcio binds its own socket and logs its failure in lines of its own: a port that is taken is named in
        # keyless's one line first (a race with another process binding it in between ends as the error below).
        bind_listener("gRPC listener", "--grpc-port", listen.host, listen.port).close()
    if workers <= 1:
        return listen, None
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((listen.host, listen.port))
    except OSError as exc:
        held.close()
        raise listener_error("gRPC listener", "--grpc-port", listen.host, listen.port,
                             (exc.strerror or type(exc).__name__).lower()) from None
    return replace(listen, port=held.getsockname()[1], shared=True), held


async def add_grpc_listener(listeners: Listeners, runtime: Runtime, keyless: Keyless) -> str:
    """The gRPC listener of this process (``runtime.grpc``), started here: in the main process, and in every worker
    too when the port is shared. The proxy (main process only) relays the h2 connections it intercepts to it.
    Returns its ``host:port`` as gRPC targets are written."""
    listen = runtime.grpc
    assert listen is not None
    tls = None
    if listen.tls and runtime.tls_cert is not None and runtime.tls_key is not None:
        tls = (runtime.tls_key.read_bytes(), runtime.tls_cert.read_bytes())
    server = build_grpc_server(keyless, runtime.limits, shared_port=listen.shared)
    try:
        bound = bind_grpc(server, listen.host, listen.port, tls=tls)
    except OSError as exc:
        raise listener_error("gRPC listener", "--grpc-port", listen.host, listen.port,
                             "the address is in use or not available" if "bind" in str(exc) else str(exc)) from None
    await server.start()
    listeners.grpc.append(server)
    if listeners.proxy is not None:
        listeners.proxy.relay_grpc_to(listen.client_host, bound, tls=tls is not None)
    return url_of(listen.client_host, bound)[len("http://"):]


def proxy_password(data_dir: Path) -> str:
    """The password of a proxy listening off loopback: made once (0600) in the data dir, read by ``keyless env``."""
    path = data_dir / PROXY_PASSWORD
    try:
        write_private(path, secrets.token_urlsafe(24) + "\n", exclusive=True)
    except FileExistsError:
        pass  # made by an earlier start: keep it, so clients configured with it keep working
    return path.read_text().strip()
