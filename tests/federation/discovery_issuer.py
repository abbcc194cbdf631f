"""A real OIDC issuer over HTTP on loopback for the discovery tests: it serves
``/.well-known/openid-configuration`` and a JWKS from a thread, counts what it is asked, and can be told to
misbehave (answer with another status, redirect, stall, send too much)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.federation.issuer import Issuer

Route = Callable[[BaseHTTPRequestHandler], None]


class HttpIssuer:
    """An issuer at ``http://127.0.0.1:PORT`` whose keys are ``keys`` (stand-in issuers; the first signs)."""

    def __init__(self) -> None:
        self.keys = [Issuer(kid="key-1")]
        self.requests: list[str] = []
        self.routes: dict[str, Route] = {}  # a path's answer, overriding the normal one
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                route = outer.routes.get(self.path)
                if route is not None:
                    route(self)
                elif self.path == "/.well-known/openid-configuration":
                    outer.send_json(self, {"issuer": outer.url, "jwks_uri": outer.url + "/jwks",
                                           "id_token_signing_alg_values_supported": ["RS256"]})
                elif self.path == "/jwks":
                    keys = [json.loads(k.jwks())["keys"][0] | {"x5t": "ignored"} for k in outer.keys]
                    # An encryption key and a key of another algorithm, as real issuers publish: skipped.
                    keys.append({"kty": "RSA", "use": "enc", "kid": "enc", "n": keys[0]["n"], "e": "AQAB"})
                    keys.append({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"})
                    outer.send_json(self, {"keys": keys})
                else:
                    self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def send_json(handler: BaseHTTPRequestHandler, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def token(self, audience: str, *, key: int = 0, **extra: Any) -> str:
        return self.keys[key].token(audience, issuer=self.url, **extra)

    def count(self, path: str) -> int:
        return self.requests.count(path)


@contextmanager
def running_issuer() -> Iterator[HttpIssuer]:
    issuer = HttpIssuer()
    thread = threading.Thread(target=issuer.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        issuer.server.shutdown()
        issuer.server.server_close()
