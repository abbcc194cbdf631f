"""The process ``keyless serve`` starts: it holds the data dir's lock, resolves the runtime once, bootstraps the
store, serves every port, starts the ``--workers N`` extra API processes with that same runtime, and keeps
``endpoints.json`` current while it lives. A worker's side is ``worker_main``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from keyless.datadir import DataDirLock, describe, remove_endpoints, write_endpoints
from keyless.metadata.app import ATTACHED_META
from keyless.server.listeners import (
    add_grpc_listener,
    add_side_listeners,
    api_listeners,
    bind_api,
    grpc_listen,
    reserve_grpc_port,
)
from keyless.server.options import ServeOptions, audit_retention_days, check
from keyless.server.runtime import GrpcListen, Runtime, api_app, open_keyless, resolve
from keyless.service.app import Keyless
from keyless.service.audit import AuditLog
from keyless.service.bootstrap import bootstrap
from keyless.service.core import account_condition_name

log = logging.getLogger("keyless")
WORKER_READY_ENV = "KEYLESS_WORKER_READY_FD"
WORKER_READY_TIMEOUT = 60.0
AUDIT_PRUNE_INTERVAL = 60.0


@dataclass
class _Startup:
    announced: bool = False  # endpoints.json written: the data dir is in use


def run(options: ServeOptions) -> None:
    _configure_logging(options.log_level, options.access_log, "")
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            asyncio.run(serve(options))
        else:
            uvloop.run(serve(options))


async def serve(options: ServeOptions) -> None:
    """One server per data dir (a lock held while the process lives); a data dir this start created is removed
    again if the start fails."""
    check(options)
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
    """Bind the API's socket and check (and, for ``--workers N``, hold) the gRPC port before anything else starts."""
    api_sock = bind_api(options.host, options.port, reuse_port=options.workers > 1)
    grpc, grpc_held = None, None
    if (wanted := grpc_listen(options)) is not None:
        grpc, grpc_held = reserve_grpc_port(wanted, options.workers)
    try:
        await _serve_with(options, startup, api_sock, grpc)
    finally:
        if grpc_held is not None:
            grpc_held.close()


async def _serve_with(options: ServeOptions, startup: _Startup, api_sock: socket.socket,
                      grpc: GrpcListen | None) -> None:
    runtime = resolve(options, api_sock.getsockname()[1], grpc)
    keyless = await open_keyless(runtime)
    await bootstrap(keyless, runtime.data_dir)
    if options.attach:
        await attach_account(keyless, options.attach)

    endpoints: dict[str, object] = {"api": runtime.api_url, "pid": os.getpid(),
                                    "dataDir": str(runtime.data_dir.resolve()),
                                    "project": runtime.settings.default_project}
    app = api_app(keyless, runtime)
    listeners = api_listeners(runtime, app, api_sock)
    endpoints.update(await add_side_listeners(listeners, options, runtime, keyless, app))

    stop = _stop_on_signals()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        if await listeners.wait_started():
            if options.seed is not None:
                await apply_seed(options.seed, runtime.api_url, runtime.data_dir)
            spawned = [_spawn_worker(runtime) for _ in range(options.workers - 1)]
            workers = [worker for worker, _ in spawned]
            if workers:
                # endpoints.json announces a server whose every process takes connections.
                await asyncio.gather(*(asyncio.to_thread(_wait_ready, *pair) for pair in spawned))
                endpoints["workers"] = [w.pid for w in workers]
            if runtime.grpc is not None:
                # After the workers are started (each serves gRPC too when they share the port): a process forked
                # while gRPC's threads run gets a log line from grpcio's fork handlers (the workers exec at once).
                # With the proxy on it always runs (on loopback unless --grpc-port says where): the proxy relays
                # gRPC clients' h2 to it.
                endpoints["grpc"] = await add_grpc_listener(listeners, runtime, keyless)
            settle_memory()
            # The banner first: whoever waits for endpoints.json (scripts, tests) finds it already printed.
            attached = await keyless.store.get_meta(ATTACHED_META)
            print(describe(endpoints, attached or ""), flush=True)
            write_endpoints(runtime.data_dir, endpoints)
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
        remove_endpoints(runtime.data_dir)
        for worker in workers:
            worker.terminate()
        await listeners.stop()
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        await keyless.store.close()
    listeners.raise_failures()


def _configure_logging(log_level: str, access_log: bool, tag: str) -> None:
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING),
                        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")
    if access_log:
        logging.getLogger("keyless.access").setLevel(logging.INFO)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _die_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn_worker(runtime: Runtime) -> tuple[subprocess.Popen[bytes], int]:
    """A worker receives the supervisor's runtime whole, pickled over its stdin (not the environment, which would
    carry a database password into every process it starts); returns it and the pipe it writes a byte to once it
    listens."""
    ready_read, ready_write = os.pipe()
    env = {**os.environ, WORKER_READY_ENV: str(ready_write)}
    try:
        worker = subprocess.Popen(
            [sys.executable, "-c", "from keyless.server.supervisor import worker_main; worker_main()"],
            env=env, stdin=subprocess.PIPE, preexec_fn=_die_with_parent, pass_fds=(ready_write,))
    finally:
        os.close(ready_write)
    assert worker.stdin is not None
    with worker.stdin:
        worker.stdin.write(pickle.dumps(runtime))
    return worker, ready_read


def _wait_ready(worker: subprocess.Popen[bytes], ready: int) -> None:
    """Until the worker listens (it writes a byte), or fails to start (end of file: it exited)."""
    try:
        readable, _, _ = select.select([ready], [], [], WORKER_READY_TIMEOUT)
        if not readable or os.read(ready, 1) != b"1":
            raise SystemExit(f"keyless serve: worker {worker.pid} did not start (see the log above).")
    finally:
        os.close(ready)


def worker_main() -> None:
    """An extra API process of ``--workers N``: the supervisor's runtime (from stdin), its own SO_REUSEPORT socket
    (and its own gRPC listener on the gRPC port, SO_REUSEPORT too)."""
    runtime: Runtime = pickle.load(sys.stdin.buffer)  # noqa: S301 (written by the supervisor that started it)
    _configure_logging(runtime.log_level, runtime.access_log, "[worker]")
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve_worker(runtime))


async def _serve_worker(runtime: Runtime) -> None:
    sock = bind_api(runtime.host, runtime.port, reuse_port=True)
    keyless = await open_keyless(runtime)
    listeners = api_listeners(runtime, api_app(keyless, runtime), sock)
    stop = _stop_on_signals()
    try:
        if await listeners.wait_started():
            if runtime.grpc is not None and runtime.grpc.shared:
                await add_grpc_listener(listeners, runtime, keyless)  # the port the supervisor holds for us
            ready = int(os.environ.pop(WORKER_READY_ENV))
            os.write(ready, b"1")
            os.close(ready)
        settle_memory()
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *listeners.tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        await listeners.stop()
        await keyless.store.close()


def settle_memory() -> None:
    """Once started: what start-up allocated (modules, the CEL runtime, keys, app objects) is moved out of the
    cycle collector's reach. Its full collections otherwise re-scan all of it, pausing every request on the
    process for 20-35 ms a few times a minute under load."""
    gc.collect()
    gc.freeze()


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
