"""The two reference servers: bare ASGI apps (no framework) on keyless's server stack (uvicorn with httptools,
on uvloop, keyless's uvicorn config and socket options).

* ``trivial``: parse a JSON POST body, answer a small JSON document: the ceiling of the stack.
* ``sign``: parse the JSON body and sign one RS256 JWT per request with a key loaded at start: the ceiling of
  an RSA-bound method on this stack.

Both are plain ASGI callables, as the issue's "bare ASGI app" says: keyless answers its hot routes from the
ASGI messages too (``keyless.http.credentials``), so a reference built on Starlette's ``Request``/``Response``
would carry 20-30 microseconds per request that keyless does not, and flatter keyless's ratio by about a tenth
(measured in session 5: a Starlette version of ``sign`` reached 0.91-0.95 of this one's rate).

``python -m bench.bareapps --app trivial|sign --workers 2 --ready-file F`` starts N processes, each with its
own ``SO_REUSEPORT`` socket on one port (as ``keyless serve --workers N`` does), writes ``{"port", "pids"}``
to F once every process is accepting, and stops them all on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_json(send: Send, status: int, content: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


def _post_only(handler: Callable[[bytes], bytes]) -> App:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or scope["path"] != "/":
            await _send_json(send, 404, b'{"error":"not found"}')
            return
        await _send_json(send, 200, handler(await _body(receive)))

    return app


def trivial_app() -> App:
    def echo(raw: bytes) -> bytes:
        data = orjson.loads(raw)
        return orjson.dumps({"ok": True, "fields": len(data)})

    return _post_only(echo)


def sign_app() -> App:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = _b64url(orjson.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}))
    pkcs1 = padding.PKCS1v15()
    sha256 = hashes.SHA256()

    def sign(raw: bytes) -> bytes:
        data = orjson.loads(raw)
        now = int(time.time())
        claims = {"iss": "bench@bench.iam.gserviceaccount.com", "sub": data.get("sub", ""),
                  "aud": data.get("aud", ""), "iat": now, "exp": now + 3600}
        signing_input = header + b"." + _b64url(orjson.dumps(claims))
        token = signing_input + b"." + _b64url(key.sign(signing_input, pkcs1, sha256))
        return orjson.dumps({"signedJwt": token.decode()})

    return _post_only(sign)


def bind_reuseport(port: int, *, listen: bool = True) -> socket.socket:
    """The socket options of keyless's ``bind_socket`` with ``reuse_port=True``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    if listen:
        sock.listen(2048)
        sock.setblocking(False)
    return sock


async def _serve_child(app_name: str, port: int, ready: Path) -> None:
    import uvicorn

    app = trivial_app() if app_name == "trivial" else sign_app()
    sock = bind_reuseport(port)
    # The uvicorn.Config keyless uses (keyless.server.listeners.Listeners.add_asgi).
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            date_header=True, proxy_headers=False, http="httptools")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    ready.write_text(str(os.getpid()))
    await task


def child_main(app_name: str, port: int, ready: Path) -> None:
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve_child(app_name, port, ready))


def parent_main(app_name: str, workers: int, ready_file: Path) -> None:
    # A bound, never-listening SO_REUSEPORT socket holds the port for the children and takes no connection.
    holder = bind_reuseport(0, listen=False)
    port = int(holder.getsockname()[1])
    flags = [ready_file.with_name(f"{ready_file.name}.{i}") for i in range(workers)]
    for flag in flags:
        flag.unlink(missing_ok=True)
    children = [subprocess.Popen([sys.executable, "-m", "bench.bareapps", "--child", "--app", app_name,
                                  "--port", str(port), "--ready-file", str(flag)]) for flag in flags]
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + 60
    while not stop and not all(f.exists() for f in flags):
        if any(c.poll() is not None for c in children) or time.monotonic() > deadline:
            stop = True
            break
        time.sleep(0.01)
    if not stop:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"port": port, "pids": [c.pid for c in children]}))
        os.replace(tmp, ready_file)
    while not stop and all(c.poll() is None for c in children):
        time.sleep(0.1)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    for flag in flags:
        flag.unlink(missing_ok=True)
    holder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--app", choices=("trivial", "sign"), required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        child_main(args.app, args.port, args.ready_file)
    else:
        parent_main(args.app, args.workers, args.ready_file)


if __name__ == "__main__":
    main()
