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
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from keyless.clock import Clock, OffsetClock, SystemClock
from keyless.crypto.keys import MasterKey
from keyless.http.app import build_app
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
    extra: dict[str, object] = field(default_factory=dict)


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


async def serve(options: ServeOptions) -> None:
    data_dir = options.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    master = MasterKey.load_or_create(master_key_path(options))
    sock = bind_socket(options.host, options.port)
    port = sock.getsockname()[1]
    wildcard = options.host in ("0.0.0.0", "::")  # noqa: S104 (comparing, not binding)
    api_url = url_of("127.0.0.1" if wildcard else options.host, port)
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
    app = build_app(keyless)
    config = uvicorn.Config(app, log_level=options.log_level, access_log=False, lifespan="off",
                            server_header=False, date_header=True)
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.01)
        write_endpoints(data_dir, {"api": api_url, "pid": os.getpid(), "dataDir": str(data_dir.resolve())})
        print(f"keyless serving {api_url} (data dir {data_dir}, project {settings.default_project})", flush=True)

    announcer = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        announcer.cancel()
        remove_endpoints(data_dir)
        await store.close()


def run(options: ServeOptions) -> None:
    logging.basicConfig(level=getattr(logging, options.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options))
