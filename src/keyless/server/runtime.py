"""What every API process of one ``keyless serve`` runs with: resolved once, in the supervisor, from the options and
the bound API port, into one frozen value that each worker receives whole (pickled over its stdin). A process only
opens things from it (the master key, the store, the service, the API app), so no worker can resolve an option
differently from the process that started it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import ASGIApp

from keyless.clock import Clock, OffsetClock, SystemClock
from keyless.crypto.keys import MasterKey
from keyless.http.app import build_app
from keyless.server.options import ServeOptions, is_loopback, is_wildcard, master_key_path
from keyless.service.app import Keyless
from keyless.service.audit import open_sink
from keyless.service.config import Settings
from keyless.service.limits import Limits
from keyless.storage import open_store


@dataclass(frozen=True, slots=True)
class GrpcListen:
    """Where the gRPC listener is served. With ``--workers N`` (``shared``) every process serves it on the one port,
    as the API's: SO_REUSEPORT among the processes of this server, the port chosen by the supervisor before any
    process binds it (``port`` 0 only for one process: grpcio then picks a free one)."""

    host: str  # the address bound
    client_host: str  # where clients on this machine (and the proxy's relay) reach it
    port: int
    tls: bool  # with the API's certificate
    shared: bool = False


@dataclass(frozen=True, slots=True)
class Runtime:
    data_dir: Path
    database: str | None
    master_key_file: Path  # resolved (--master-key-file, KEYLESS_MASTER_KEY_FILE, or the data dir's)
    settings: Settings
    limits: Limits
    host: str  # where the API listens: every process binds its own socket there
    port: int  # the API's bound port (never 0)
    tls_cert: Path | None
    tls_key: Path | None
    time_travel: bool
    audit_log: str | None
    log_level: str
    access_log: bool
    grpc: GrpcListen | None = None  # the gRPC listener, when one runs (every process serves it when shared)

    @property
    def api_host(self) -> str:
        """The host clients on this machine reach the API at (loopback when it listens on every address)."""
        return "127.0.0.1" if is_wildcard(self.host) else self.host

    @property
    def api_tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def api_url(self) -> str:
        return url_of(self.api_host, self.port, tls=self.api_tls)

    def clock(self) -> Clock:
        return OffsetClock() if self.time_travel else SystemClock()


def url_of(host: str, port: int, *, tls: bool = False) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def user_picker(host: str, public_url: str) -> bool:
    """Whether the sign-in page may list users to pick (no password): the API listens on loopback alone and is
    reached there (a --public-url elsewhere means a reverse proxy brings other machines in)."""
    return is_loopback(host) and is_loopback(urlsplit(public_url).hostname or "")


def resolve(options: ServeOptions, api_port: int, grpc: GrpcListen | None = None) -> Runtime:
    """The runtime of a server whose API socket is bound to ``api_port`` (and whose gRPC listener, if any, is
    ``grpc``, its port already checked and, for several processes, held): built once, by the supervisor."""
    api_host = "127.0.0.1" if is_wildcard(options.host) else options.host
    public_url = options.public_url or url_of(api_host, api_port, tls=options.tls_cert is not None)
    settings = Settings(
        default_project=options.project,
        issuer=options.issuer,
        public_url=public_url,
        key_rotation_period=options.key_rotation_days * 86400,
        universe_domains=tuple(d.lower().strip(".") for d in options.universe_domains),
        enforce_services=options.enforce_services,
        user_picker=user_picker(options.host, public_url),
    )
    return Runtime(data_dir=options.data_dir, database=options.database, master_key_file=master_key_path(options),
                   settings=settings, limits=options.limits, host=options.host, port=api_port,
                   tls_cert=options.tls_cert, tls_key=options.tls_key, time_travel=options.allow_time_travel,
                   audit_log=options.audit_log, log_level=options.log_level, access_log=options.access_log,
                   grpc=grpc)


async def open_keyless(runtime: Runtime) -> Keyless:
    """The service of one process: the master key, an open store and the settings and limits of the runtime."""
    master = MasterKey.load_or_create(runtime.master_key_file)
    store = open_store(runtime.database, runtime.data_dir)
    await store.open()
    return Keyless(store, runtime.clock(), runtime.settings, master, limits=runtime.limits,
                   audit_sink=open_sink(runtime.audit_log))


def api_app(keyless: Keyless, runtime: Runtime) -> ASGIApp:
    """The API's ASGI app, built the same way in every process from the same runtime."""
    return build_app(keyless, universe_domains=runtime.settings.universe_domains, access_log=runtime.access_log)
