"""``keyless serve``: open the data dir and store, bootstrap, listen, and keep ``endpoints.json`` current."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from keyless.clock import Clock, OffsetClock, SystemClock
from keyless.crypto.ca import LocalCA, server_context, system_ca_bundle
from keyless.crypto.keys import MasterKey
from keyless.http.app import build_app
from keyless.metadata.app import ATTACHED_META, build_metadata_app
from keyless.proxy.hosts import served_hosts
from keyless.proxy.server import MAX_HEAD, InterceptionProxy
from keyless.service.app import Keyless
from keyless.service.bootstrap import bootstrap
from keyless.service.config import Settings
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
    log_level: str = "warning"
    # None: the API port + 1 / + 2, or a free port when the API port is 0; 0: a free port; -1: off.
    proxy_port: int | None = None
    metadata_port: int | None = None
    metadata_host: str = "127.0.0.1"
    attach: str | None = None


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def master_key_path(options: ServeOptions) -> Path:
    if options.master_key_file is not None:
        return options.master_key_file
    env = os.environ.get("KEYLESS_MASTER_KEY_FILE")
    return Path(env) if env else options.data_dir / "master.key"


def write_endpoints(data_dir: Path, endpoints: dict[str, object]) -> Path:
    path = data_dir / "endpoints.json"
    tmp = data_dir / f".endpoints.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(endpoints, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove_endpoints(data_dir: Path) -> None:
    path = data_dir / "endpoints.json"
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


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


async def serve(options: ServeOptions) -> None:
    data_dir = options.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    master = MasterKey.load_or_create(master_key_path(options))
    api_sock = bind_socket(options.host, options.port)
    api_port = api_sock.getsockname()[1]
    wildcard = options.host in ("0.0.0.0", "::")  # noqa: S104 (comparing, not binding)
    api_host = "127.0.0.1" if wildcard else options.host
    api_url = url_of(api_host, api_port)
    settings = Settings(
        default_project=options.project,
        issuer=options.issuer,
        public_url=options.public_url or api_url,
        key_rotation_period=options.key_rotation_days * 86400,
    )
    clock: Clock = OffsetClock() if options.allow_time_travel else SystemClock()
    store = open_store(options.database, data_dir)
    await store.open()
    keyless = Keyless(store, clock, settings, master)
    await bootstrap(keyless, data_dir)
    if options.attach:
        await attach_account(keyless, options.attach)

    endpoints: dict[str, object] = {"api": api_url, "pid": os.getpid(), "dataDir": str(data_dir.resolve()),
                                    "project": settings.default_project}
    servers: list[_Server] = []
    api_server = _Server(uvicorn.Config(build_app(keyless), log_level=options.log_level, access_log=False,
                                        lifespan="off", server_header=False, date_header=True))
    servers.append(api_server)
    tasks = [asyncio.create_task(api_server.serve(sockets=[api_sock]))]

    metadata_port = _side_port(options.metadata_port, options.port, 2)
    if metadata_port >= 0:
        md_sock = bind_socket(options.metadata_host, metadata_port)
        md_server = _Server(uvicorn.Config(build_metadata_app(keyless), log_level=options.log_level,
                                           access_log=False, lifespan="off", server_header=False))
        servers.append(md_server)
        tasks.append(asyncio.create_task(md_server.serve(sockets=[md_sock])))
        endpoints["metadata"] = url_of(options.metadata_host, md_sock.getsockname()[1])

    proxy_listener: asyncio.Server | None = None
    proxy_port = _side_port(options.proxy_port, options.port, 1)
    if proxy_port >= 0:
        ca = LocalCA(data_dir / "tls")
        ca.ensure()
        leaf_cert, leaf_key = ca.issue("proxy-leaf", served_hosts())
        bundle = data_dir / "ca-bundle.pem"
        bundle.write_bytes(system_ca_bundle().rstrip() + b"\n" + ca.cert_path.read_bytes())
        proxy = InterceptionProxy(api_host, api_port, server_context(leaf_cert, leaf_key))
        proxy_sock = bind_socket(options.host, proxy_port)
        proxy_listener = await asyncio.start_server(proxy.handle, sock=proxy_sock, limit=MAX_HEAD)
        endpoints["proxy"] = url_of(api_host, proxy_sock.getsockname()[1])
        endpoints["caCert"] = str(ca.cert_path.resolve())
        endpoints["caBundle"] = str(bundle.resolve())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    try:
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        if all(s.started for s in servers):
            write_endpoints(data_dir, endpoints)
            print(f"keyless serving {api_url} (data dir {data_dir}, project {settings.default_project})",
                  flush=True)
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
    finally:
        remove_endpoints(data_dir)
        for s in servers:
            s.request_exit()
        if proxy_listener is not None:
            proxy_listener.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


async def attach_account(keyless: Keyless, email: str) -> None:
    """Name the account the metadata server serves (``--attach``)."""
    if await keyless.core.resolve_account(email) is None:
        raise SystemExit(f"--attach: service account {email} does not exist.")
    await keyless.store.set_meta(ATTACHED_META, email.lower())


def run(options: ServeOptions) -> None:
    logging.basicConfig(level=getattr(logging, options.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options))
