"""``keyless serve``: open the data dir and store, bootstrap, listen, and keep ``endpoints.json`` current."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp

from keyless.clock import Clock, OffsetClock, SystemClock
from keyless.crypto.ca import LocalCA, server_context, system_ca_bundle
from keyless.crypto.keys import MasterKey
from keyless.datadir import DataDirLock, describe, remove_endpoints, write_endpoints
from keyless.http.app import build_app
from keyless.http.protocol import guarded_protocol
from keyless.metadata.app import ATTACHED_META, build_metadata_app
from keyless.private_files import write_private
from keyless.proxy.destinations import TunnelRules
from keyless.proxy.hosts import served_hosts
from keyless.proxy.server import MAX_HEAD, InterceptionProxy, ProxyLimits
from keyless.service.app import Keyless
from keyless.service.audit import AuditLog, open_sink
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
from keyless.service.core import account_condition_name
from keyless.service.limits import Limits
from keyless.storage import open_store

log = logging.getLogger("keyless")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class ServeOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8093
    database: str | None = None
    project: str = "keyless-dev"
    master_key_file: Path | None = None
    issuer: str = "https://accounts.google.com"
    public_url: str | None = None
    key_rotation_days: float = 14.0
    allow_time_travel: bool = False
    enforce_services: bool = False
    log_level: str = "warning"
    # None: the API port + 1 / + 2, or a free port when the API port is 0; 0: a free port; -1: off.
    proxy_port: int | None = None
    metadata_port: int | None = None
    metadata_host: str = "127.0.0.1"
    # The proxy listens here whatever ``host`` is; off loopback it asks for the password in DATA_DIR/proxy.password.
    proxy_host: str = "127.0.0.1"
    attach: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    universe_domains: tuple[str, ...] = ()
    universe_port: int | None = None
    universe_cert: Path | None = None
    universe_key: Path | None = None
    audit_log: str | None = None
    audit_retention_days: float | None = None  # None: the embedded store's default; 0: keep every entry
    seed: Path | None = None  # applied through keyless.cli.seed once listening, before endpoints.json
    access_log: bool = False
    workers: int = 1
    limits: Limits = field(default_factory=Limits)


class ListenerError(SystemExit):
    """A listener could not start: one line naming it, its address and the option that changes it."""


def bind_listener(name: str, option: str, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    try:
        return bind_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        free = "0 picks a free one" if option == "--port" else "0 picks a free one, -1 turns it off"
        raise ListenerError(f"keyless serve: the {name} cannot listen on {url_of(host, port)[7:]}: {reason}. "
                            f"Choose another port with {option} ({free}).") from None


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def user_picker(host: str, public_url: str) -> bool:
    """Whether the sign-in page may list users to pick (no password): the API listens on loopback alone and is
    reached there (a --public-url elsewhere means a reverse proxy brings other machines in)."""
    return is_loopback(host) and is_loopback(urlsplit(public_url).hostname or "")


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


def url_of(host: str, port: int, *, tls: bool = False) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def master_key_path(options: ServeOptions) -> Path:
    if options.master_key_file is not None:
        return options.master_key_file
    env = os.environ.get("KEYLESS_MASTER_KEY_FILE")
    return Path(env) if env else options.data_dir / "master.key"


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after shutting down, which would skip our clean-up; we handle signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def _side_port(explicit: int | None, api_port: int, offset: int) -> int:
    if explicit is not None:
        return explicit
    return 0 if api_port == 0 else api_port + offset


# Days of audit log kept on the embedded SQLite store unless told otherwise: Cloud Logging keeps Data Access logs
# 30 days by default. On PostgreSQL (a broker) the retention is the operator's explicit choice.
SQLITE_AUDIT_RETENTION_DAYS = 30.0


def uses_postgresql(database: str | None) -> bool:
    return database is not None and database.startswith(("postgresql://", "postgres://"))


def audit_retention_days(options: ServeOptions) -> float:
    """``--audit-retention-days``, or the embedded store's default (0: keep every entry)."""
    if options.audit_retention_days is not None:
        return options.audit_retention_days
    if uses_postgresql(options.database):
        raise SystemExit("keyless serve: with a PostgreSQL --database, choose how long the audit log is kept: "
                         "--audit-retention-days N (0 keeps every entry).")
    return SQLITE_AUDIT_RETENTION_DAYS


def _check_exposure(options: ServeOptions) -> None:
    audit_retention_days(options)
    if not is_loopback(options.host) and options.tls_cert is None and not options.insecure:
        raise SystemExit(f"Refusing to serve plain HTTP on {options.host}: give --tls-cert and --tls-key, "
                         "or --insecure if a TLS terminator stands in front.")
    if options.allow_time_travel and options.database and not options.database.startswith("sqlite"):
        raise SystemExit("--allow-time-travel is for tests on the embedded SQLite store; replicas sharing a "
                         "database must share one clock.")
    if options.workers > 1 and options.allow_time_travel:
        raise SystemExit("--allow-time-travel needs one process (--workers 1): the clock it moves is in memory.")
    if options.workers < 1:
        raise SystemExit("--workers must be at least 1.")
    if (options.tls_cert is None) != (options.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together.")


class _Listeners:
    """The uvicorn servers and raw listeners of one process, started and stopped together."""

    def __init__(self, log_level: str, limits: Limits) -> None:
        self.log_level = log_level
        self.protocol = guarded_protocol(limits.header_timeout, limits.body_timeout, limits.max_connections)
        self.keep_alive_timeout = limits.keep_alive_timeout
        self.servers: list[_Server] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.raw: list[asyncio.Server] = []

    def add_asgi(self, app: object, sock: socket.socket, *, certfile: Path | None = None,
                 keyfile: Path | None = None) -> None:
        config = uvicorn.Config(app, log_level=self.log_level, access_log=False, lifespan="off",  # type: ignore[arg-type]
                                server_header=False, date_header=True, proxy_headers=False, http=self.protocol,
                                timeout_keep_alive=self.keep_alive_timeout,  # type: ignore[arg-type]
                                ssl_certfile=str(certfile) if certfile else None,
                                ssl_keyfile=str(keyfile) if keyfile else None)
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
        for server in self.servers:
            server.request_exit()
        for listener in self.raw:
            listener.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def raise_failures(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


@dataclass
class _Startup:
    announced: bool = False  # endpoints.json written: the data dir is in use


async def serve(options: ServeOptions) -> None:
    """One server per data dir (a lock held while the process lives); a data dir this start created is removed
    again if the start fails."""
    _check_exposure(options)
    data_dir = options.data_dir
    created = not data_dir.exists()
    if created:
        # Only a directory keyless creates gets its mode from keyless: an existing one is the operator's.
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(mode=0o700)
    lock = DataDirLock(data_dir)
    startup = _Startup()
    try:
        lock.acquire()
        await _serve(options, startup)
    except BaseException:
        if created and not startup.announced:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


async def _serve(options: ServeOptions, startup: _Startup) -> None:
    if options.access_log:
        logging.getLogger("keyless.access").setLevel(logging.INFO)
    data_dir = options.data_dir
    master = MasterKey.load_or_create(master_key_path(options))
    api_sock = bind_listener("API", "--port", options.host, options.port, reuse_port=options.workers > 1)
    api_port = api_sock.getsockname()[1]
    wildcard = options.host in ("0.0.0.0", "::")  # noqa: S104 (comparing, not binding)
    api_host = "127.0.0.1" if wildcard else options.host
    api_tls = options.tls_cert is not None
    api_url = url_of(api_host, api_port, tls=api_tls)
    universes = tuple(d.lower().strip(".") for d in options.universe_domains)
    settings = Settings(
        default_project=options.project,
        issuer=options.issuer,
        public_url=options.public_url or api_url,
        key_rotation_period=options.key_rotation_days * 86400,
        universe_domains=universes,
        enforce_services=options.enforce_services,
        user_picker=user_picker(options.host, options.public_url or api_url),
    )
    clock: Clock = OffsetClock() if options.allow_time_travel else SystemClock()
    store = open_store(options.database, data_dir)
    await store.open()
    keyless = Keyless(store, clock, settings, master, limits=options.limits, audit_sink=open_sink(options.audit_log))
    await bootstrap(keyless, data_dir)
    if options.attach:
        await attach_account(keyless, options.attach)

    endpoints: dict[str, object] = {"api": api_url, "pid": os.getpid(), "dataDir": str(data_dir.resolve()),
                                    "project": settings.default_project}
    app = api_app(keyless, options)
    listeners = _Listeners(options.log_level, options.limits)
    listeners.add_asgi(app, api_sock, certfile=options.tls_cert, keyfile=options.tls_key)
    own_ports = {api_port}

    metadata_port = _side_port(options.metadata_port, options.port, 2)
    if metadata_port >= 0:
        md_sock = bind_listener("metadata server", "--metadata-port", options.metadata_host, metadata_port)
        listeners.add_asgi(build_metadata_app(keyless), md_sock)
        own_ports.add(md_sock.getsockname()[1])
        endpoints["metadata"] = url_of(options.metadata_host, md_sock.getsockname()[1])

    proxy_port = _side_port(options.proxy_port, options.port, 1)
    if proxy_port >= 0 or universes:
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
                                          _side_port(options.universe_port, options.port, 3))
            listeners.add_asgi(app, universe_sock, certfile=cert, keyfile=key)
            own_ports.add(universe_sock.getsockname()[1])
            endpoints["universe"] = {"domains": list(universes),
                                     "url": url_of(api_host, universe_sock.getsockname()[1], tls=True)}
        if proxy_port >= 0:
            proxy_sock = bind_listener("interception proxy", "--proxy-port", options.proxy_host, proxy_port)
            own_ports.add(proxy_sock.getsockname()[1])
            public = not is_loopback(options.proxy_host)
            password = proxy_password(data_dir) if public else None
            proxy = InterceptionProxy(api_host, api_port, server_context(leaf_cert, leaf_key), universes,
                                      upstream_tls=api_tls, rules=TunnelRules(frozenset(own_ports), public=public),
                                      password=password, limits=ProxyLimits(
                                          header_timeout=options.limits.header_timeout,
                                          idle_timeout=options.limits.tunnel_idle_timeout,
                                          max_connections=options.limits.max_connections))
            listeners.raw.append(await asyncio.start_server(proxy.handle, sock=proxy_sock, limit=MAX_HEAD))
            proxy_wildcard = options.proxy_host in ("0.0.0.0", "::")  # noqa: S104 (comparing, not binding)
            endpoints["proxy"] = url_of("127.0.0.1" if proxy_wildcard else options.proxy_host,
                                        proxy_sock.getsockname()[1])
            if public:
                endpoints["proxyPasswordFile"] = str((data_dir / PROXY_PASSWORD).resolve())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        if await listeners.wait_started():
            if options.seed is not None:
                await apply_seed(options.seed, api_url, data_dir)
            spawned = [_spawn_worker(options, api_port, settings) for _ in range(options.workers - 1)]
            workers = [worker for worker, _ in spawned]
            if workers:
                # endpoints.json announces a server whose every process takes connections.
                await asyncio.gather(*(asyncio.to_thread(_wait_ready, *pair) for pair in spawned))
                endpoints["workers"] = [w.pid for w in workers]
            settle_memory()
            # The banner first: whoever waits for endpoints.json (scripts, tests) finds it already printed.
            attached = await keyless.store.get_meta(ATTACHED_META)
            print(describe(endpoints, attached or ""), flush=True)
            write_endpoints(data_dir, endpoints)
            startup.announced = True
            waiter = asyncio.create_task(stop.wait())
            retention_days = audit_retention_days(options)
            retention = (asyncio.create_task(keep_audit_retention(keyless.audit, retention_days))
                         if retention_days > 0 else None)
            await asyncio.wait([waiter, *listeners.tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if retention is not None:
                retention.cancel()
    finally:
        remove_endpoints(data_dir)
        for worker in workers:
            worker.terminate()
        await listeners.stop()
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        await store.close()
    listeners.raise_failures()


WORKER_ENV = "KEYLESS_WORKER_OPTIONS"
WORKER_READY_ENV = "KEYLESS_WORKER_READY_FD"


def _die_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def api_app(keyless: Keyless, options: ServeOptions) -> ASGIApp:
    """The API's ASGI app: built the same way in the main process and in every worker, from the same options and
    settings (so no worker answers a host or a limit differently)."""
    return build_app(keyless, universe_domains=keyless.settings.universe_domains, access_log=options.access_log)


def _to_json(value: object) -> object:
    return str(value) if isinstance(value, Path) else value


def _spawn_worker(options: ServeOptions, port: int, settings: Settings) -> tuple[subprocess.Popen[bytes], int]:
    """A worker gets every option and the settings the main process resolved, not a hand-picked subset; returns
    it and the pipe it writes a byte to once it listens."""
    fields = {f.name: _to_json(getattr(options, f.name)) for f in dataclasses.fields(options) if f.name != "limits"}
    spec = {"options": {**fields, "port": port, "master_key_file": str(master_key_path(options))},
            "limits": dataclasses.asdict(options.limits), "settings": dataclasses.asdict(settings)}
    ready_read, ready_write = os.pipe()
    env = {**os.environ, WORKER_ENV: json.dumps(spec), WORKER_READY_ENV: str(ready_write)}
    try:
        worker = subprocess.Popen([sys.executable, "-c", "from keyless.server import worker_main; worker_main()"],
                                  env=env, preexec_fn=_die_with_parent, pass_fds=(ready_write,))
    finally:
        os.close(ready_write)
    return worker, ready_read


WORKER_READY_TIMEOUT = 60.0


def _wait_ready(worker: subprocess.Popen[bytes], ready: int) -> None:
    """Until the worker listens (it writes a byte), or fails to start (end of file: it exited)."""
    try:
        readable, _, _ = select.select([ready], [], [], WORKER_READY_TIMEOUT)
        if not readable or os.read(ready, 1) != b"1":
            raise SystemExit(f"keyless serve: worker {worker.pid} did not start (see the log above).")
    finally:
        os.close(ready)


def _options_from_json(raw: dict[str, Any], limits: Limits) -> ServeOptions:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ServeOptions):
        if f.name == "limits" or f.name not in raw:
            continue
        value = raw[f.name]
        if value is not None and "Path" in str(f.type):
            value = Path(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return ServeOptions(**values, limits=limits)


def worker_main() -> None:
    """An extra API process of ``--workers N``: same database and master key, its own SO_REUSEPORT socket."""
    spec = json.loads(os.environ[WORKER_ENV])
    options = _options_from_json(spec["options"], Limits(**spec["limits"]))
    raw_settings = spec["settings"]
    settings = Settings(**{**raw_settings, "universe_domains": tuple(raw_settings["universe_domains"])})
    logging.basicConfig(level=getattr(logging, options.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve_worker(options, settings))


async def _serve_worker(options: ServeOptions, settings: Settings) -> None:
    if options.access_log:
        logging.getLogger("keyless.access").setLevel(logging.INFO)
    master = MasterKey.load_or_create(master_key_path(options))
    sock = bind_listener("API", "--port", options.host, options.port, reuse_port=True)
    store = open_store(options.database, options.data_dir)
    await store.open()
    keyless = Keyless(store, SystemClock(), settings, master, limits=options.limits,
                      audit_sink=open_sink(options.audit_log))
    listeners = _Listeners(options.log_level, options.limits)
    listeners.add_asgi(api_app(keyless, options), sock, certfile=options.tls_cert, keyfile=options.tls_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if await listeners.wait_started():
            ready = int(os.environ.pop(WORKER_READY_ENV))
            os.write(ready, b"1")
            os.close(ready)
        settle_memory()
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *listeners.tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        await listeners.stop()
        await store.close()


AUDIT_PRUNE_INTERVAL = 60.0


async def keep_audit_retention(audit: AuditLog, days: float, interval: float = AUDIT_PRUNE_INTERVAL) -> None:
    """``--audit-retention-days``: entries older than that are deleted at start and then every ``interval``
    seconds, by the main process of each ``keyless serve`` (replicas doing it too only find less to delete)."""
    while True:
        try:
            deleted = await audit.prune(days * 86400)
        except Exception as exc:  # a busy or unreachable database is retried next time
            log.warning("audit retention: %s", type(exc).__name__)
        else:
            if deleted:
                log.info("audit retention: %d entries older than %g days deleted", deleted, days)
        await asyncio.sleep(interval)


PROXY_PASSWORD = "proxy.password"


def proxy_password(data_dir: Path) -> str:
    """The password of a proxy listening off loopback: made once (0600) in the data dir, read by ``keyless env``."""
    path = data_dir / PROXY_PASSWORD
    try:
        write_private(path, secrets.token_urlsafe(24) + "\n", exclusive=True)
    except FileExistsError:
        pass  # made by an earlier start: keep it, so clients configured with it keep working
    return path.read_text().strip()


def settle_memory() -> None:
    """Once started: what start-up allocated (modules, the CEL runtime, keys, app objects) is moved out of the
    cycle collector's reach. Its full collections otherwise re-scan all of it, pausing every request on the
    process for 20-35 ms a few times a minute under load."""
    gc.collect()
    gc.freeze()


async def apply_seed(seed: Path, api_url: str, data_dir: Path) -> None:
    """``--seed``: the same code path as ``keyless apply``, over HTTP as the owner, in a worker thread."""
    from keyless.cli.client import CliError, GlobalOptions
    from keyless.cli.seed import apply_file

    try:
        await asyncio.to_thread(apply_file, seed, GlobalOptions(url=api_url, data_dir=data_dir))
    except CliError as err:
        raise SystemExit(f"--seed {seed}: {err}") from None


async def attach_account(keyless: Keyless, email: str) -> None:
    """Name the account the metadata server serves (``--attach``); audited like ``PUT /keyless/v1/metadata``."""
    account = await keyless.core.resolve_account(email)
    if account is None:
        raise SystemExit(f"--attach: service account {email} does not exist.")
    if await keyless.store.get_meta(ATTACHED_META) == account.email:
        return
    await keyless.store.set_meta(ATTACHED_META, account.email)
    await keyless.audit.commit_system_change("keyless.SetMetadataAttachment", account_condition_name(account),
                                             serviceAccount=account.email)


def run(options: ServeOptions) -> None:
    logging.basicConfig(level=getattr(logging, options.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            asyncio.run(serve(options))
        else:
            uvloop.run(serve(options))
